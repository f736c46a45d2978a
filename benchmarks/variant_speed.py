"""Whole-engine CPU speed of the fast model variants, paired against the default's.

Issue 20 item 3 bounds a larger default to 2x the default's CPU time. This times
what a user runs, ``Engine.infer`` (preprocessing, the network, post-processing)
on a 512 x 512 tile (a 2 x 2 mosaic of the CoNSeP sample tiles), through fp32 ONNX
Runtime with N intra-op threads (and N post-processing / numba threads; one child
process per N in ``--threads``), for random-weight
bundles of each variant (speed does not depend on the weights; post-processing
does a little, through the number of nuclei a random network outputs, so the
network alone is timed too). Wall time
(ONNX Runtime works in its own threads, which a thread's CPU time would miss).
Rounds are interleaved, each variant once per round; the ratio is paired per round
against ``fast_hr_convnext_atto`` (the default's architecture).

    .venv/bin/python benchmarks/variant_speed.py --threads 1 2 --rounds 7 \
        --out benchmarks/results/variant-speed-cpu-DATE.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hvx._artifacts import onnx_for_bundle
from hvx.assets import sample_paths
from hvx.backends.onnxruntime import OnnxRuntimeBackend
from hvx.bundle import load_bundle, save_bundle
from hvx.engine import Engine
from hvx.io import read_image
from hvx.model import create_model
from hvx.postprocess import PostprocessConfig
from hvx.preprocess import PreprocessConfig
from hvx.provenance import provenance, write_json

BASE = "fast_hr_convnext_atto"
VARIANTS = (BASE, "fast_hr_convnext_pico", "fast_convnext_pico", "fast_convnext_tiny")


def _engine(variant: str, root: Path, threads: int) -> Engine:
    torch.manual_seed(0)
    model = create_model(variant, in_chans=6, num_types=5)
    path = save_bundle(
        root / variant,
        model,
        class_names=("misc", "inflammatory", "epithelial", "spindle"),
        mpp=0.25,
        preprocess=PreprocessConfig(tile_size=32),
        postprocess=PostprocessConfig(),
    )
    engine = Engine.load(path, backend="onnxruntime", precision="fp32")
    # Engine.load gives ONNX Runtime its default threads; pin them (same cached export)
    onnx = onnx_for_bundle(load_bundle(path))
    engine.runner = OnnxRuntimeBackend(onnx, threads=threads)
    return engine


def _wall(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _child(variants: list[str], rounds: int, threads: int) -> dict:
    """One thread count: every variant, interleaved; JSON rows."""
    torch.set_num_threads(threads)
    t = [read_image(f) for f in sample_paths()]
    tile = np.concatenate([np.concatenate(t[:2], 1), np.concatenate(t[2:], 1)], 0)
    with tempfile.TemporaryDirectory() as tmp:
        engines = {v: _engine(v, Path(tmp), threads) for v in variants}
        for e in engines.values():  # warm-up (session set-up, first allocation)
            e.infer(tile, num_threads=threads)
        total = {v: [] for v in engines}
        net = {v: [] for v in engines}
        for _ in range(rounds):
            for v, e in engines.items():
                total[v].append(_wall(lambda e=e: e.infer(tile, num_threads=threads)))
                net[v].append(_wall(lambda e=e: e.heads(tile)))
    rows = {}
    for v in engines:
        ratio = np.array(total[v]) / np.array(total[BASE])
        rows[v] = {
            "infer_s": float(np.median(total[v])),
            "infer_p25_p75_s": [float(np.percentile(total[v], q)) for q in (25, 75)],
            "heads_s": float(np.median(net[v])),
            "tiles_512_per_s": float(1.0 / np.median(total[v])),
            "time_vs_default_paired_median": float(np.median(ratio)),
            "time_vs_default_p25_p75": [float(np.percentile(ratio, q)) for q in (25, 75)],
        }
    return rows


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(_child(args.variants, args.rounds, args.child)))
        return
    per_threads = {}
    for n in args.threads:
        env = {**os.environ, **{v: str(n) for v in _THREAD_VARS}}
        cmd = [sys.executable, __file__, "--child", str(n), "--rounds", str(args.rounds)]
        cmd += ["--variants", *args.variants]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        per_threads[str(n)] = rows = json.loads(out.strip().splitlines()[-1])
        for v, r in rows.items():
            lo, hi = r["time_vs_default_p25_p75"]
            print(
                f"{n} thr  {v:24s} infer {r['infer_s']:6.2f} s  heads {r['heads_s']:6.2f} s  "
                f"x{r['time_vs_default_paired_median']:.2f} ({lo:.2f}-{hi:.2f})"
            )
    doc = {
        "benchmark": "variant_speed",
        "tile": "512x512 (2x2 CoNSeP sample tiles)",
        "backend": "onnxruntime fp32 with N intra-op threads; wall time, interleaved",
        "rounds": args.rounds,
        "load_average": list(os.getloadavg()),
        "threads": per_threads,
        "machine": provenance(),
    }
    if args.out:
        write_json(args.out, doc)


if __name__ == "__main__":
    main()
