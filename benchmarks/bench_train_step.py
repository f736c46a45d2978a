"""Throughput of one training step (forward + loss + backward + AdamW), with and without SAM.

One step = what ``hvx.training.trainer.Trainer.train_step`` runs on a batch:
``hvx.preprocess`` (6-channel, numba on the CPU), the model's forward, ``HoVerLoss``
(UFL + Dice on np/tp, MSE + MSGE on hv), backward and the AdamW step; with SAM
a second forward/backward at the perturbed weights. Input: ``--batch`` random
uint8 tiles of ``--size`` x ``--size`` (default 2 x 128 x 128: the heavy
stride-1 variants take minutes per step at 256), synthetic targets, fp32.

Reported per variant and mode: median wall seconds per step and tiles/s, plus
process CPU seconds (less hurt than wall time on a shared, loaded 2-core box).
The no-SAM step is the baseline of the SAM step (``sam_cost`` = ratio).

``--layouts`` instead compares the memory layouts the trainer can use
(``TrainConfig.channels_last``): no-SAM steps of two identical models, one NCHW
and one channels-last, timed alternately, with the per-round ratio
(NCHW / channels-last wall time) as the paired speed-up.

    .venv/bin/python benchmarks/bench_train_step.py \
        --out benchmarks/results/train-step-cpu-2026-11-27.json
    .venv/bin/python benchmarks/bench_train_step.py --layouts --variants fast_hr_convnext_atto \
        --batch 4 --size 256 --repeats 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from hvx.model import create_model
from hvx.preprocess import PreprocessConfig, preprocess
from hvx.provenance import provenance, write_json
from hvx.training.losses import HoVerLoss
from hvx.training.sam import SAM

#: Variants practical on a 2-core CPU (stride-1 ConvNeXt-small: ~0.6 TFLOP per 256 tile).
CPU_VARIANTS = ("fast_convnext_atto", "fast_convnext_pico", "fast_convnext_tiny", "convnext_atto")


def _batch(n: int, size: int, num_types: int) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    tp = torch.from_numpy(rng.integers(0, num_types, (n, size, size)))
    targets = {
        "np": (tp > 0).long(),
        "hv": torch.from_numpy(rng.uniform(-1, 1, (n, 2, size, size)).astype(np.float32)),
        "tp": tp,
    }
    return images, targets


def _step_fn(variant: str, sam: bool, batch: int, size: int, channels_last: bool = False):
    """A closure running one training step (what ``Trainer.train_step`` does)."""
    torch.manual_seed(0)
    model = create_model(variant, in_chans=6, num_types=5).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    wrapped = SAM(opt, rho=0.05) if sam else None
    loss_fn = HoVerLoss()
    images, targets = _batch(batch, size, 5)
    cfg = PreprocessConfig()

    def step() -> None:
        x = preprocess(images, cfg)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)

        def closure():
            loss, _ = loss_fn(model(x), targets)
            loss.backward()
            return loss

        if wrapped is not None:
            wrapped.step(closure, model=model)
        else:
            opt.zero_grad()
            closure()
            opt.step()

    return step


def measure(variant: str, sam: bool, batch: int, size: int, repeats: int) -> dict:
    step = _step_fn(variant, sam, batch, size)
    wall, cpu = [], []
    for i in range(repeats + 1):  # first call: warm-up (numba, allocator)
        t, c = time.perf_counter(), time.process_time()
        step()
        if i:
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    med = statistics.median(wall)
    return {
        "variant": variant,
        "sam": sam,
        "batch": batch,
        "size": size,
        "wall_s_median": med,
        "wall_s_min": min(wall),
        "cpu_s_median": statistics.median(cpu),
        "tiles_per_s": batch / med,
        "tiles_per_s_best": batch / min(wall),
        "repeats": repeats,
    }


def measure_layouts(variant: str, batch: int, size: int, repeats: int) -> dict:
    """NCHW vs channels-last no-SAM steps, alternating; paired per-round ratios."""
    steps = {cl: _step_fn(variant, False, batch, size, cl) for cl in (False, True)}
    for f in steps.values():  # warm-up
        f()
    times: dict[bool, list[float]] = {False: [], True: []}
    ratios = []
    for r in range(repeats):
        order = (False, True) if r % 2 == 0 else (True, False)
        for cl in order:
            t = time.perf_counter()
            steps[cl]()
            times[cl].append(time.perf_counter() - t)
        ratios.append(times[False][-1] / times[True][-1])
    return {
        "variant": variant,
        "sam": False,
        "batch": batch,
        "size": size,
        "repeats": repeats,
        "nchw_wall_s_median": statistics.median(times[False]),
        "channels_last_wall_s_median": statistics.median(times[True]),
        "speedup_paired_median": statistics.median(ratios),
        "speedup_paired_min": min(ratios),
        "speedup_paired_max": max(ratios),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=list(CPU_VARIANTS))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layouts", action="store_true", help="NCHW vs channels-last instead")
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.layouts:
        rows = [measure_layouts(v, args.batch, args.size, args.repeats) for v in args.variants]
        for r in rows:
            print(
                f"{r['variant']:22s} NCHW {r['nchw_wall_s_median']:.2f} s/step, channels-last "
                f"{r['channels_last_wall_s_median']:.2f} s/step: paired speed-up "
                f"{r['speedup_paired_median']:.2f} ({r['speedup_paired_min']:.2f}.."
                f"{r['speedup_paired_max']:.2f})",
                flush=True,
            )
        what = (
            "one no-SAM training step (preprocess + fwd + HoVerLoss + bwd + AdamW), "
            f"fp32, batch {args.batch} x {args.size}x{args.size} x 6ch, {args.threads} torch "
            "threads, NCHW vs channels-last models timed alternately"
        )
        _write(args.out, "train_step_layouts", what, rows)
        return
    rows = []
    for variant in args.variants:
        plain = measure(variant, False, args.batch, args.size, args.repeats)
        with_sam = measure(variant, True, args.batch, args.size, args.repeats)
        with_sam["sam_cost"] = with_sam["wall_s_median"] / plain["wall_s_median"]
        for r in (plain, with_sam):
            rows.append(r)
            print(
                f"{r['variant']:20s} sam={r['sam']!s:5s} {r['tiles_per_s']:7.2f} tiles/s "
                f"(best {r['tiles_per_s_best']:.2f}; {r['wall_s_median']:.2f} s/step, "
                f"cpu {r['cpu_s_median']:.2f} s)",
                flush=True,
            )
    what = (
        "one training step (preprocess + fwd + HoVerLoss + bwd + AdamW), fp32, "
        f"batch {args.batch} x {args.size}x{args.size} x 6ch, {args.threads} torch threads; "
        "SAM = two fwd/bwd per step; baseline of each SAM row = the no-SAM row"
    )
    _write(args.out, "train_step", what, rows)


def _write(out: str | None, name: str, what: str, rows: list[dict]) -> None:
    """Writes the result file (when ``out`` is given) with provenance and load."""
    if out:
        doc = {
            "benchmark": name,
            "what": what,
            "load_average_at_end": os.getloadavg(),
            "provenance": provenance(),
            "rows": rows,
        }
        write_json(out, doc)


if __name__ == "__main__":
    main()
