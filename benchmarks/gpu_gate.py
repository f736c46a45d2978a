"""The accuracy gate of ``hvx.backends.quantize`` for torch fp16 / bf16 on a device.

Runs the bundle in fp32 and in each low precision with the torch backend on the
same device, on the gate's validation tiles (CoNSeP validation sources with
``--data``, else the shipped samples), and prints one JSON line per precision:
pooled instance-map PQ against fp32, class flips, passed (PQ >= 0.98, flips <= 1%
of matched nuclei), and the paired fp32/low-precision network time ratio
(interleaved rounds). ``benchmarks/gpu_check.sh`` runs it on CUDA; on a CPU,
``--device cpu`` checks bf16 (the CPU bf16 backend).

    python benchmarks/gpu_gate.py --device cuda --data .gpudata/consep [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _runner(model, device: str, precision: str):
    from hvx.backends.torch import TorchBackend

    if device == "cpu" and precision == "bf16":
        from hvx.backends.cpu_bf16 import CpuBf16Backend
        from hvx.model import HoVerNetInference

        return CpuBf16Backend(HoVerNetInference(model))
    return TorchBackend.from_model(model, device=device, precision=precision)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=None, help="default: the shipped model")
    p.add_argument("--device", default="cuda")
    p.add_argument("--precisions", nargs="+", default=["fp16", "bf16"])
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    import torch

    from hvx.assets import default_model_path
    from hvx.backends import quantize as q
    from hvx.bench import harness, paired
    from hvx.bundle import load_bundle
    from hvx.preprocess import preprocess
    from hvx.provenance import provenance, write_json

    bundle = load_bundle(args.bundle or default_model_path())
    val, _, desc = q.gate_tiles(bundle, args.data, calib=1)
    ref = _runner(bundle.build_model("cpu"), args.device, "fp32")
    x = preprocess(val[:8], bundle.preprocess, device=args.device, dtype=torch.float32)
    sync = harness.device_sync(args.device) or (lambda: None)
    out = {"provenance": provenance(), "tiles": desc["validation"], "results": {}}
    for prec in args.precisions:
        try:
            test = _runner(bundle.build_model("cpu"), args.device, prec)
        except ValueError as err:
            out["results"][prec] = {"error": str(err)}
            print(json.dumps({prec: out["results"][prec]}))
            continue
        gate = q.run_gate(bundle, ref, test, val)

        def call(r):
            return lambda: (r.run(x), sync())

        times = paired.interleaved({"fp32": call(ref), prec: call(test)}, args.rounds, warmup=3)
        out["results"][prec] = {
            "gate": gate.to_dict(),
            "batch": int(x.shape[0]),
            "speedup_vs_fp32_paired": paired.paired_ratio(times["fp32"], times[prec]),
        }
        print(json.dumps({prec: out["results"][prec]}))
    if args.out:
        write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
