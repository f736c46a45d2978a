"""Post-processing per tile on one thread, in CPU time: C++ (hvx._native) vs the twin.

What ``hvx-bench --stages postprocess`` does not: the instance map alone and map +
nucleus table, one tile at a time through the public Python API on one thread,
timed in thread CPU time (the figures docs/postprocess.md quotes). The batch
speed at 1 and 2 threads, paired in wall time, is the stage's job; the inputs and
the native-vs-twin check are the stage's (``hvx.bench.postprocess``).

Inputs (``--inputs``): ``synthetic``, 256x256 head outputs built from real CoNSeP
labels (tiles with >= 50 nuclei, SPEC §2 HV targets + smooth noise), or
``predicted``, the default model's fp32 heads on real tiles (CoNSeP, else the
packaged samples) with its own post-processing constants; the same arrays for both.
Tiles go one at a time on one thread (OpenCV also limited to one thread), for the
instance map alone and for map + nucleus table. Wall-clock medians plus per-call
CPU time (the machine is shared and noisy; CPU time is the steadier figure).
Writes a JSON file with provenance (default ``results/postprocess-cpu-<UTC date>.json``).

The headline speed-up is paired: each round times the reference and the native
path back to back on the same tiles (alternating which goes first) and keeps
the ratio of the two, so a slow spell of the shared host (whole seconds at
about 1.5x the CPU time per call, from work on the same physical core) slows
both sides of a ratio instead of one. The medians of separate runs
(``speedup_cpu``) are kept for comparison with earlier files.

    .venv/bin/python benchmarks/bench_postprocess.py [--tiles 16] [--repeats 5] [--rounds 15]
        [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from hvx._postprocess_ref import instance_table_ref, instances_from_hv_ref
from hvx.bench import harness
from hvx.bench.postprocess import agreement, predicted_batch, realistic_batch
from hvx.postprocess import PostprocessConfig, instance_table, instances_from_hv
from hvx.provenance import provenance, write_json

RESULTS = Path(__file__).parent / "results"


def measure(fn, repeats):
    """Median wall ms and median CPU ms (this thread) of fn() after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.thread_time() - c0) * 1e3)
    return statistics.median(wall), statistics.median(cpu), min(wall)


def paired(ref_fn, nat_fn, rounds):
    """Reference / native CPU-time ratio per round, the two timed back to back.

    The order alternates between rounds, so neither side always runs first.

    Returns:
        {"rounds", "median", "p25", "p75", "ratios"}: quantiles of the per-round
        ratios, each ratio reference CPU time / native CPU time.
    """
    ref_fn(), nat_fn()
    ratios = []
    for r in range(rounds):
        times = {}
        for name, fn in (
            (("ref", ref_fn), ("nat", nat_fn)) if r % 2 == 0 else (("nat", nat_fn), ("ref", ref_fn))
        ):
            c0 = time.thread_time()
            fn()
            times[name] = time.thread_time() - c0
        ratios.append(times["ref"] / times["nat"])
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {
        "rounds": rounds,
        "median": statistics.median(ratios),
        "p25": q[0],
        "p75": q[2],
        "ratios": ratios,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=15, help="rounds of the paired speed-up")
    p.add_argument("--out", default=None, help="default: results/postprocess-cpu-<date>.json")
    p.add_argument(
        "--inputs",
        choices=("synthetic", "predicted"),
        default="synthetic",
        help="synthetic: head outputs made from CoNSeP labels plus noise; predicted: the "
        "default model's fp32 heads on real tiles (with its post-processing constants)",
    )
    return p


def _single_thread(np_prob, hv, labels, config, repeats: int, rounds: int) -> dict:
    """Per-tile rows and the speed-ups (paired CPU, CPU, wall) of map and map + table."""
    n = len(np_prob)
    rows = []

    def per_tile(name, impl, fn):
        wall, cpu, best = measure(fn, repeats)
        rows.append(
            {
                "case": name,
                "impl": impl,
                "tiles": n,
                "threads": 1,
                "ms_per_tile_wall_median": wall / n,
                "ms_per_tile_wall_best": best / n,
                "ms_per_tile_cpu_median": cpu / n,
            }
        )
        return cpu / n, wall / n

    def ref_inst():
        for i in range(n):
            instances_from_hv_ref(np_prob[i], hv[i], config)

    def nat_inst():
        for i in range(n):
            instances_from_hv(np_prob[i], hv[i], config)

    def ref_full():
        for i in range(n):
            instance_table_ref(instances_from_hv_ref(np_prob[i], hv[i], config), labels[i])

    def nat_full():
        for i in range(n):
            instance_table(instances_from_hv(np_prob[i], hv[i], config), labels[i])

    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        r_i = per_tile("instance map", "reference", ref_inst)
        n_i = per_tile("instance map", "native", nat_inst)
        r_f = per_tile("instance map + nucleus table", "reference", ref_full)
        n_f = per_tile("instance map + nucleus table", "native", nat_full)
        pair_i = paired(ref_inst, nat_inst, rounds)
        pair_f = paired(ref_full, nat_full, rounds)
    finally:
        cv2.setNumThreads(cv2_threads)
    return {
        "single_thread": rows,
        # headline: per-round ratios of back-to-back CPU times (see the module doc)
        "speedup_paired_cpu": {"instance_map": pair_i, "instance_map_and_table": pair_f},
        "speedup_cpu": {
            "instance_map": r_i[0] / n_i[0],
            "instance_map_and_table": r_f[0] / n_f[0],
        },
        "speedup_wall": {
            "instance_map": r_i[1] / n_i[1],
            "instance_map_and_table": r_f[1] / n_f[1],
        },
    }


def _report(doc: dict) -> None:
    for r in doc["single_thread"]:
        print(
            f"{r['case']:<30} {r['impl']:<10} cpu {r['ms_per_tile_cpu_median']:7.3f} ms/tile"
            f"  wall {r['ms_per_tile_wall_median']:7.3f} ms/tile"
        )
    for k, v in doc["speedup_paired_cpu"].items():
        print(
            f"speed-up (paired cpu) {k}: {v['median']:.2f} (p25 {v['p25']:.2f}, p75 {v['p75']:.2f})"
        )
    print("speed-up (cpu):", {k: round(v, 1) for k, v in doc["speedup_cpu"].items()})
    print("speed-up (wall):", {k: round(v, 1) for k, v in doc["speedup_wall"].items()})
    print(f"native equals reference on every tile: {doc['inputs']['native_equals_reference']}")


def main() -> None:
    args = _parser().parse_args()
    if args.inputs == "predicted":
        np_prob, hv, tp, source, config = predicted_batch(args.tiles, 256)
    else:
        np_prob, hv, tp, source = realistic_batch(args.tiles, 256, seed=0, min_nuclei=50)
        config = PostprocessConfig()
    labels = np.argmax(tp, axis=1).astype(np.int32)
    check = agreement(np_prob, hv, config)
    speeds = _single_thread(np_prob, hv, labels, config, args.repeats, args.rounds)
    doc = {
        "benchmark": "postprocess (SPEC §3a + §3b), native C++ vs reference twin",
        "provenance": provenance(),
        "inputs": {
            "kind": args.inputs,
            "source": source,
            "postprocess_config": config.to_dict(),
            "tiles": args.tiles,
            "size": [256, 256],
            "nuclei_per_tile_mean": check["nuclei_per_tile"],
            "foreground_fraction_mean": check["foreground_fraction"],
            "native_equals_reference": check["native_equals_reference"],
        },
        "notes": "single-thread rows: OpenCV limited to 1 thread, tiles one at a time through "
        "the public Python API (validation included). Speed-ups use CPU time (steadier on "
        "this shared 2-core machine); wall-clock medians are recorded too.",
        **speeds,
        "peak_rss_mb": harness.peak_rss_mb(),
        # the machine is shared: 1-, 5-, 15-minute load averages at the end of the run
        "load_average": list(os.getloadavg()),
    }
    date = dt.datetime.now(dt.UTC).date().isoformat()
    out = Path(args.out) if args.out else RESULTS / f"postprocess-cpu-{date}.json"
    write_json(out, doc)
    _report(doc)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
