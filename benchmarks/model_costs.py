"""Params, FLOPs and forward time per 256x256 tile for every hvx.model variant.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on meta
tensors (FLOP = 2 x MAC; convolutions and matmuls only, norms and activations
are not counted). Time: ``HoVerNetInference`` forward, batch 1, ``torch.no_grad``,
eval mode, fp32 on the CPU with ``--threads`` threads (fp16 on CUDA), median of
``--repeats`` calls after one warm-up call.

    .venv/bin/python benchmarks/model_costs.py --out benchmarks/results/model_costs_cpu.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from hvx.model import HoVerNetInference, create_model, list_variants
from hvx.provenance import provenance, write_json


def count(variant: str, size: int) -> dict:
    with torch.device("meta"):
        model = create_model(variant)
        x = torch.empty(1, 6, size, size)
        enc = FlopCounterMode(display=False)
        with enc:
            feats = model.encoder(x)
        dec = FlopCounterMode(display=False)
        with dec:  # fast_hr_*: the full-resolution skip stem counts as decoder
            if model.hires is None:
                model.decoder(feats)
            else:
                model.decoder(feats, model.hires(x))
    return {
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "encoder_params_m": sum(p.numel() for p in model.encoder.parameters()) / 1e6,
        "encoder_gflop": enc.get_total_flops() / 1e9,
        "decoder_gflop": dec.get_total_flops() / 1e9,
        "gflop": (enc.get_total_flops() + dec.get_total_flops()) / 1e9,
        "size_multiple": model.size_multiple,
    }


def time_forward(
    variant: str, size: int, repeats: int, device: str
) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds per call (CPU time is less hurt by a shared box)."""
    torch.manual_seed(0)
    model = HoVerNetInference(create_model(variant)).eval().to(device)
    dtype = torch.float16 if device == "cuda" else torch.float32
    model = model.to(dtype)
    x = torch.randn(1, 6, size, size, device=device, dtype=dtype)
    out, cpu = [], []
    with torch.no_grad():
        for i in range(repeats + 1):
            if device == "cuda":
                torch.cuda.synchronize()
            t, c = time.perf_counter(), time.process_time()
            model(x)
            if device == "cuda":
                torch.cuda.synchronize()
            if i:  # first call is the warm-up
                out.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
    return out, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="*", default=list_variants())
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--big-repeats", type=int, default=1, help="repeats for > 150 GFLOP")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for v in args.variants:
        row = {"variant": v, "tile": args.size, **count(v, args.size)}
        reps = args.big_repeats if row["gflop"] > 150 and args.device == "cpu" else args.repeats
        load = os.getloadavg()[0]
        ts, cpu = time_forward(v, args.size, reps, args.device)
        row.update(
            forward_s_median=statistics.median(ts),
            forward_s_min=min(ts),
            forward_cpu_s_median=statistics.median(cpu),
            timed_calls=len(ts),
            loadavg_1min_before=load,
        )
        rows.append(row)
        print(
            f"{v:22s} {row['params_m']:6.1f} M  enc {row['encoder_gflop']:6.1f}  "
            f"dec {row['decoder_gflop']:6.1f}  total {row['gflop']:6.1f} GFLOP  "
            f"{row['forward_s_median']:.3f} s wall, {row['forward_cpu_s_median']:.3f} s CPU "
            f"({len(ts)} calls, load {load:.1f})",
            flush=True,
        )
    write_json(
        args.out,
        {
            "benchmark": "model_costs",
            "provenance": provenance(),
            "settings": {
                "tile": args.size,
                "batch": 1,
                "threads": args.threads,
                "device": args.device,
                "dtype": "float16" if args.device == "cuda" else "float32",
                "flops": "FlopCounterMode, FLOP = 2 x MAC, conv/matmul only",
            },
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
