"""Pack training runs (bundles, logs) into a few files small enough to bring back.

Usage: python scripts/pack_runs.py RUNS DEST [--budget-mb 45] [--part-mb 15.9]

For each run folder under RUNS (an ``hvx-train --out`` folder, with its console
output beside it as ``RUNS/<name>.log``): reads the best validation PQ from
``log.jsonl``; stores the bundle float16 with ``scripts/ship_default_model.py``
(its parity check on the sample tiles; the float32 bundle when that refuses);
then, best run first, takes each bundle while the weights fit in ``--budget-mb``.
Logs, configs and ``summary.json`` are always taken. Writes
``DEST/train.tar.part-aa``, ``-ab``, ... of at most ``--part-mb`` MB each (the
device tool returns files up to 16 MiB). Rejoin with ``cat train.tar.part-* | tar x``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SHIP = Path(__file__).with_name("ship_default_model.py")


def best_validation(run: Path) -> dict | None:
    """The best ``validation`` record of ``run/log.jsonl`` by binary PQ, or None."""
    log = run / "log.jsonl"
    if not log.is_file():
        return None
    recs = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    vals = [r for r in recs if r.get("event") == "validation"]
    return max(vals, key=lambda r: r["pq"]) if vals else None


def ship_half(run: Path) -> tuple[Path | None, str]:
    """``run/bundle`` stored float16 as ``run/bundle16``; falls back to float32."""
    if not (run / "bundle" / "model.json").is_file():
        return None, "no bundle"
    env = {**os.environ, "OMP_NUM_THREADS": "4"}
    cmd = [sys.executable, str(SHIP), str(run / "bundle"), "--out", str(run / "bundle16")]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired:
        out, rc = "ship_default_model.py: timed out after 180 s", 1
    (run / "ship.log").write_text(out)
    if rc == 0:
        return run / "bundle16", "float16"
    return run / "bundle", "float32 (float16 refused or failed: ship.log)"


def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def main(argv: list[str] | None = None) -> int:
    """Packs the runs; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path)
    p.add_argument("dest", type=Path)
    p.add_argument("--budget-mb", type=float, default=45.0)
    p.add_argument("--part-mb", type=float, default=15.9)
    p.add_argument("--no-half", action="store_true", help="pack the float32 bundles as they are")
    args = p.parse_args(argv)
    runs = sorted(d for d in args.runs.iterdir() if d.is_dir())
    best = {r.name: best_validation(r) for r in runs}
    runs.sort(key=lambda r: -(best[r.name] or {"pq": -1.0})["pq"])
    if args.no_half:
        shipped = {
            r: (r / "bundle", "float32") if (r / "bundle").is_dir() else (None, "no bundle")
            for r in runs
        }
    else:
        with ThreadPoolExecutor(len(runs) or 1) as pool:
            shipped = dict(zip(runs, pool.map(ship_half, runs), strict=True))
    summary, used = {}, 0.0
    args.dest.mkdir(parents=True, exist_ok=True)
    tar_path = args.runs / "train.tar"
    with tarfile.open(tar_path, "w") as tar:
        for run in runs:
            bundle, how = shipped[run]
            size = _size_mb(bundle) if bundle is not None else 0.0
            taken = bundle is not None and used + size <= args.budget_mb
            if taken:
                tar.add(bundle, arcname=f"{run.name}/bundle")
                used += size
            for name in ("log.jsonl", "config.yaml", "ship.log"):
                if (run / name).is_file():
                    tar.add(run / name, arcname=f"{run.name}/{name}")
            console = args.runs / f"{run.name}.log"
            if console.is_file():
                tar.add(console, arcname=f"{run.name}/console.log")
            summary[run.name] = {
                "best_validation": best[run.name],
                "bundle": how if taken else f"not packed ({how}; budget {args.budget_mb} MB)",
            }
        blob = json.dumps(summary, indent=1).encode()
        info = tarfile.TarInfo("summary.json")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    print(json.dumps(summary, indent=1))
    part = int(args.part_mb * 1e6)
    data = tar_path.read_bytes()
    for k in range(0, len(data), part):
        idx = k // part
        suffix = chr(ord("a") + idx // 26) + chr(ord("a") + idx % 26)
        tmp = args.dest / f".train.tar.part-{suffix}.tmp"
        tmp.write_bytes(data[k : k + part])
        tmp.rename(args.dest / f"train.tar.part-{suffix}")
    print(f"packed {len(data) / 1e6:.1f} MB into {args.dest}/train.tar.part-*")
    return 0


if __name__ == "__main__":
    sys.exit(main())
