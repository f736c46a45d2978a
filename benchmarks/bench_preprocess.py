"""hvx.preprocess on the CPU: numba path vs the OpenCV reference (issue 5).

A batch of 64 real 256x256 CoNSeP tiles, 2 threads for both (numba, OpenCV,
torch), the default config (CLAHE 2.0, 8x8, 6 channels, float32 output).
Writes benchmarks/results/preprocess-cpu-<date>.json with provenance.

    .venv/bin/python benchmarks/bench_preprocess.py [--repeats 15] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from hvx.bench import harness
from hvx.bench import preprocess as stage

ROOT = Path(__file__).resolve().parent


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
    records = stage.run(ctx)
    for r in records:
        t = r.timing
        ratio = f"  {r.speedup:.2f}x vs {r.baseline}" if r.speedup else ""
        print(
            f"{r.impl:<10} batch {r.batch}: median {t.median_ms:8.1f} ms "
            f"(p20 {t.p20_ms:.1f}, p80 {t.p80_ms:.1f}, min {t.min_ms:.1f}), "
            f"{r.tiles_per_s:7.1f} tiles/s{ratio}"
        )
    date = dt.datetime.now(dt.UTC).date().isoformat()
    out = Path(args.out) if args.out else ROOT / "results" / f"preprocess-cpu-{date}.json"
    fast = records[-1]
    doc = {
        "benchmark": "preprocess-cpu",
        "what": "hvx.preprocess impl='numba' vs impl='reference' (OpenCV), same tiles",
        "threads": args.threads,
        "speedup_median": fast.speedup,
        "speedup_min": records[0].timing.min_ms / fast.timing.min_ms,
        "provenance": harness.provenance(),
        "peak_rss_mb": harness.peak_rss_mb(),
        "records": [r.to_json() for r in records],
    }
    harness.write_json(out, doc)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
