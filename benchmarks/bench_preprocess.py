"""hvx.preprocess on the CPU: numba path vs the OpenCV reference (issue 5).

A batch of 64 real 256x256 CoNSeP tiles, 2 threads for both (numba, OpenCV,
torch), the default config (CLAHE 2.0, 8x8, 6 channels, float32 output).
Writes benchmarks/results/preprocess-cpu-<date>.json with provenance.

    .venv/bin/python benchmarks/bench_preprocess.py [--repeats 15] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path

import numpy as np

from hvx.bench import harness
from hvx.bench import preprocess as stage
from hvx.preprocess import PreprocessConfig, preprocess
from hvx.provenance import provenance, write_json

ROOT = Path(__file__).resolve().parent


def cpu_times(batch: int, threads: int, repeats: int) -> dict:
    """CPU time (process_time, all threads) per call, interleaved: robust to other jobs."""
    tiles, _ = stage.load_tiles(batch, 256)
    cfg = PreprocessConfig()
    before = stage._set_threads(threads)
    try:
        calls = {
            "numba": lambda: preprocess(tiles, cfg, impl="numba"),
            "reference": lambda: preprocess(tiles, cfg, impl="reference"),
        }
        samples: dict[str, list[float]] = {k: [] for k in calls}
        for fn in calls.values():
            fn()
        for _ in range(repeats):
            for name, fn in calls.items():
                t0 = time.process_time()
                fn()
                samples[name].append((time.process_time() - t0) * 1e3)
    finally:
        stage._set_threads(before)
    out = {k: {"median_ms": float(np.median(v)), "min_ms": min(v)} for k, v in samples.items()}
    out["ratio_median"] = out["reference"]["median_ms"] / out["numba"]["median_ms"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=None, help="default: results/preprocess-cpu-<UTC date>.json")
    args = p.parse_args()
    ctx = harness.BenchContext(
        batches=[args.batch],
        size=256,
        repeats=args.repeats,
        warmup=2,
        device="cpu",
        options={"threads": args.threads},
    )
    load_before = os.getloadavg()
    records = stage.run(ctx)
    for r in records:
        t = r.timing
        ratio = f"  {r.speedup:.2f}x vs {r.baseline}" if r.speedup else ""
        print(
            f"{r.impl:<10} batch {r.batch}: median {t.median_ms:8.1f} ms "
            f"(p20 {t.p20_ms:.1f}, p80 {t.p80_ms:.1f}, min {t.min_ms:.1f}), "
            f"{r.tiles_per_s:7.1f} tiles/s{ratio}"
        )
    cpu = cpu_times(args.batch, args.threads, args.repeats)
    print(
        f"CPU time per call (all threads): numba {cpu['numba']['median_ms']:.1f} ms, "
        f"reference {cpu['reference']['median_ms']:.1f} ms -> {cpu['ratio_median']:.2f}x"
    )
    date = dt.datetime.now(dt.UTC).date().isoformat()
    out = Path(args.out) if args.out else ROOT / "results" / f"preprocess-cpu-{date}.json"
    fast = records[-1]
    doc = {
        "benchmark": "preprocess-cpu",
        "what": "hvx.preprocess impl='numba' vs impl='reference' (OpenCV), same tiles",
        "threads": args.threads,
        "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
        "note": "shared 2-core machine: other jobs ran at the same time (see load average)",
        "speedup_median": fast.speedup,
        "speedup_min": records[0].timing.min_ms / fast.timing.min_ms,
        "cpu_time_per_call": cpu,
        "provenance": provenance(),
        "peak_rss_mb": harness.peak_rss_mb(),
        "records": [r.to_json() for r in records],
    }
    write_json(out, doc)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
