"""hvx.distributed on this machine: throughput with 1 and 2 engine workers vs one process,
and Ray's own overhead per chunk / region (scheduling, object transfer) vs the work.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_distributed.py \\
        --json benchmarks/results/distributed-<date>.json

Slides: mosaics of the shipped sample tiles (``--slides`` of ``--rows`` x ``--cols``
tiles of 256 px), default model on the CPU. Every process computes with one thread
(``OMP_NUM_THREADS=1``), so "1 worker" is one core of network work.

Runs, in one process and one sitting (the baseline is measured in the same run):

1. ``single``: :func:`hvx.tiling.infer_slide` per slide (what ``hvx slide`` does).
2. ``ray_w1`` / ``ray_w2``: :func:`hvx.distributed.run_slides` with 1 and 2 engine
   actors on a local Ray (``num_cpus`` = workers + 1: one slot for post-processing);
   outputs are checked byte-identical to ``single``.
3. ``ray_w1_window1``: one actor, one chunk in flight: each chunk's latency minus
   its measured work (read + network + post-processing) is Ray's overhead.
4. ``bare``: the same object sizes with no work -- an actor returns a chunk's heads
   (zeros) and a task consumes them; the round trip is pure scheduling + transfer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

OUTPUTS = ("nuclei.geojson", "nuclei.csv")


def _mosaic(path: Path, rows: int, cols: int, seed: int) -> Path:
    from hvx.assets import sample_paths

    tiles = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sample_paths()]
    rng = np.random.default_rng(seed)
    img = np.zeros((rows * 256, cols * 256, 3), np.uint8)
    for r in range(rows):
        for c in range(cols):
            t = np.rot90(tiles[rng.integers(len(tiles))], int(rng.integers(4)))
            img[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256] = t
    cv2.imwrite(str(path), img)
    return path


def _single(slides, out: Path, config) -> dict:
    from hvx import Engine
    from hvx.io.slides import open_image
    from hvx.tiling import infer_slide
    from hvx.tiling.pipeline import engine_mpp

    t0 = time.perf_counter()
    engine = Engine.load(None, device="cpu")
    t1 = time.perf_counter()
    tiles = nuclei = 0
    for s in slides:
        with open_image(s, target_mpp=engine_mpp(engine)) as reader:
            sm = infer_slide(engine, reader, out / s.stem, config=config, progress=False)
        tiles += sm["tiles_run"]
        nuclei += sm["nuclei"]
    t2 = time.perf_counter()
    return {
        "load_s": round(t1 - t0, 3),
        "run_s": round(t2 - t1, 3),
        "tiles": tiles,
        "nuclei": nuclei,
        "tiles_per_s": round(tiles / (t2 - t1), 3),
    }


def _ray(slides, out: Path, config, workers: int, region_px: int, window: int) -> dict:
    import ray

    from hvx.distributed import run_slides

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=workers + 1, include_dashboard=False, log_to_driver=False)
    t1 = time.perf_counter()
    try:
        res = run_slides(
            slides,
            out,
            config=config,
            region_px=region_px,
            workers=workers,
            window=window,
            progress=False,
        )
    finally:
        ray.shutdown()
    tiles = int(res["timing"].get("tiles", 0))
    tm = res["timing"]
    chunks = max(1, int(tm.get("chunks", 1)))
    regions = max(1, int(tm.get("regions", 1)))
    work = tm.get("read_s", 0) + tm.get("net_s", 0) + tm.get("pp_s", 0)
    return {
        "workers": workers,
        "window": window,
        "ray_init_s": round(t1 - t0, 3),
        "run_s": res["seconds"],
        "tiles": tiles,
        "tiles_per_s": round(tiles / res["seconds"], 3),
        "chunks": chunks,
        "regions": regions,
        "work_per_chunk_s": round(work / chunks, 4),
        "latency_per_chunk_s": round(tm.get("chunk_latency_s", 0) / chunks, 4),
        "overhead_per_chunk_s": round((tm.get("chunk_latency_s", 0) - work) / chunks, 4),
        "heads_mb_per_chunk": round(tm.get("bytes", 0) / chunks / 2**20, 2),
        "packed_kb_per_tile": round(tm.get("packed_bytes", 0) / max(tiles, 1) / 1024, 1),
        "commit_ms_per_region": round(1000 * tm.get("commit_s", 0) / regions, 2),
        "timing": tm,
        "workers_peak_rss_mb": res["workers"],
        "slides": res["slides"],
    }


def _bare(n: int, shapes) -> dict:
    """Actor returns zero heads of the given shapes; a task consumes them; no compute."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:

        @ray.remote(num_cpus=1)
        class Producer:
            def heads(self):
                return {"ok": 1}, tuple(np.zeros(s, np.float32) for s in shapes)

        @ray.remote(num_cpus=1)
        def consume(heads):
            return int(sum(a.size for a in heads))

        actor = Producer.remote()
        ray.get(actor.heads.options(num_returns=2).remote()[0])  # warm
        ray.get(consume.remote(actor.heads.options(num_returns=2).remote()[1]))
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            info, heads = actor.heads.options(num_returns=2).remote()
            ray.get(info)
            ray.get(consume.remote(heads))
            lat.append(time.perf_counter() - t)
    finally:
        ray.shutdown()
    lat = np.array(lat)
    return {
        "n": n,
        "mb": round(sum(int(np.prod(s)) * 4 for s in shapes) / 2**20, 2),
        "median_ms": round(1000 * float(np.median(lat)), 2),
        "p90_ms": round(1000 * float(np.quantile(lat, 0.9)), 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slides", type=int, default=2)
    p.add_argument("--rows", type=int, default=6)
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--region", type=int, default=768, help="region side in px")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--bare", type=int, default=30, help="bare round trips")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    import ray

    from hvx.provenance import provenance, write_json
    from hvx.tiling import TilingConfig

    config = TilingConfig(batch_size=args.batch, tissue=False)
    root = Path(tempfile.mkdtemp(prefix="hvx-bench-dist-"))
    result: dict = {
        "benchmark": "distributed",
        "provenance": {**provenance(), "ray": ray.__version__, "numpy": np.__version__},
        "params": vars(args)
        | {
            "json": str(args.json),
            "tissue": False,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
        "load_before": os.getloadavg(),
    }
    try:
        slides = [
            _mosaic(root / f"slide{k}.png", args.rows, args.cols, seed=k)
            for k in range(args.slides)
        ]
        result["single"] = _single(slides, root / "single", config)
        print("single", result["single"], flush=True)
        for name, w, win in (("ray_w1", 1, 4), ("ray_w2", 2, 4), ("ray_w1_window1", 1, 1)):
            out = root / name
            r = _ray(slides, out, config, w, args.region, win)
            r["identical_to_single"] = all(
                # run_slides writes one slide into ``out`` itself, several into out/<stem>
                ((out / s.stem if len(slides) > 1 else out) / f).read_bytes()
                == (root / "single" / s.stem / f).read_bytes()
                for s in slides
                for f in OUTPUTS
            )
            r["speedup_vs_single"] = round(r["tiles_per_s"] / result["single"]["tiles_per_s"], 3)
            result[name] = r
            print(name, {k: v for k, v in r.items() if k not in ("timing", "slides")}, flush=True)
        b = args.batch
        shapes = [(b, 256, 256), (b, 2, 256, 256), (b, 5, 256, 256)]
        result["bare"] = _bare(args.bare, shapes)
        print("bare", result["bare"], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["load_after"] = os.getloadavg()
    result = json.loads(json.dumps(result, default=str))  # paths in the run's report
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    else:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
