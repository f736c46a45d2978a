"""Issue 3 benchmark: native ``conic_scores`` on one thread vs the NumPy reference twin.

N CoNiC-like 256x256 tiles with ~100 nuclei each (2x2 mosaics of real CoNSeP label
tiles at 20x, perturbed predictions; see hvx.bench.metrics), timed in the same run
on the same maps, results checked equal, written as JSON with provenance.

    python benchmarks/bench_metrics.py --n 500 \
        --out benchmarks/results/metrics-cpu-2026-11-27.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from hvx import _native
from hvx.bench.metrics import make_conic_pairs
from hvx.metrics import conic_scores, conic_scores_ref
from hvx.provenance import provenance, write_json


def timed(fn, repeats: int) -> dict:
    """Wall and CPU seconds of ``repeats`` calls (CPU time is less hurt by a busy box)."""
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return {
        "wall_s_median": float(np.median(wall)),
        "wall_s_min": float(np.min(wall)),
        "cpu_s_median": float(np.median(cpu)),
        "cpu_s_min": float(np.min(cpu)),
        "repeats": repeats,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500, help="tiles (default 500)")
    p.add_argument("--ref-n", type=int, default=None, help="reference on the first K tiles only")
    p.add_argument("--repeats", type=int, default=5, help="timed native calls")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--consep", type=Path, default=None, help="CoNSeP label folder")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = p.parse_args()

    t0 = time.perf_counter()
    true, pred, source = make_conic_pairs(args.n, seed=args.seed, folder=args.consep)
    gen_s = time.perf_counter() - t0
    nuclei = np.array([np.unique(t[..., 0]).size - 1 for t in true])
    print(f"{args.n} tiles from {source}: {nuclei.mean():.1f} nuclei/tile ({gen_s:.1f} s)")

    default_threads = _native.max_threads()
    _native.set_num_threads(1)
    conic_scores(true, pred)  # warm-up
    native_1t = timed(lambda: conic_scores(true, pred), args.repeats)
    _native.set_num_threads(default_threads)
    native_mt = timed(lambda: conic_scores(true, pred), args.repeats)
    print(f"native 1 thread : {native_1t['wall_s_median'] * 1e3:.1f} ms wall (median)")
    print(f"native {default_threads} threads: {native_mt['wall_s_median'] * 1e3:.1f} ms wall")

    ref_n = args.ref_n or args.n
    ref_scores = None

    def run_ref():
        nonlocal ref_scores
        ref_scores = conic_scores_ref(true[:ref_n], pred[:ref_n])

    reference = timed(run_ref, 1)
    scale = args.n / ref_n
    ref_full = {k: v * scale for k, v in reference.items() if k.endswith(("median", "min"))}
    print(f"reference on {ref_n} tiles: {reference['wall_s_median']:.1f} s wall")

    _native.set_num_threads(1)
    nat = conic_scores(true[:ref_n], pred[:ref_n])
    _native.set_num_threads(default_threads)
    same_counts = bool(np.array_equal(nat.stats[:, :3], ref_scores.stats[:, :3]))
    iou_diff = float(np.max(np.abs(nat.stats[:, 3] - ref_scores.stats[:, 3])))
    speedup_wall = ref_full["wall_s_median"] / native_1t["wall_s_median"]
    speedup_cpu = ref_full["cpu_s_median"] / native_1t["cpu_s_median"]
    print(f"speed-up, 1 thread: {speedup_wall:.0f}x wall, {speedup_cpu:.0f}x CPU time")
    print(f"TP/FP/FN identical: {same_counts}; max |sum IoU diff|: {iou_diff:.3g}")

    doc = {
        "benchmark": "issue 3: CoNiC conic_scores, hvx._native (1 thread) vs NumPy reference twin",
        "provenance": {**provenance(), "numpy": np.__version__},
        "inputs": {
            "tiles": args.n,
            "size": [256, 256],
            "source": source,
            "description": "2x2 mosaics of CoNSeP label tiles downsampled 2x (20x, CoNiC "
            "scale), CoNSeP classes mapped to the 6 CoNiC classes; predictions: eroded/"
            "dilated outlines, 1-px shifts, dropped/merged/split nuclei, false positives, "
            "15% wrong and 3% mixed classes, shuffled non-contiguous ids",
            "nuclei_per_tile": {
                "mean": float(nuclei.mean()),
                "min": int(nuclei.min()),
                "max": int(nuclei.max()),
            },
            "seed": args.seed,
            "dtype": str(true.dtype),
        },
        "native_1_thread": native_1t,
        f"native_{default_threads}_threads": native_mt,
        "reference": {
            **reference,
            "tiles_timed": ref_n,
            "extrapolated_to_all_tiles": ref_n != args.n,
            f"seconds_for_{args.n}_tiles": ref_full,
        },
        "speedup_1_thread": {"wall": speedup_wall, "cpu": speedup_cpu},
        "agreement_on_reference_tiles": {
            "tp_fp_fn_identical": same_counts,
            "max_abs_sum_iou_diff": iou_diff,
            "pq_native": nat.pq,
            "pq_reference": ref_scores.pq,
            "mpq_plus_native": nat.mpq_plus,
            "mpq_plus_reference": ref_scores.mpq_plus,
        },
        "note": "Shared 2-core machine; timings +-30%. CPU time (process_time) is also "
        "recorded because other jobs inflate wall time.",
    }
    if args.out:
        write_json(args.out, doc)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
