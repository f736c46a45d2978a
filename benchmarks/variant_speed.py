"""Whole-engine CPU speed of the fast model variants, paired against the default's.

Issue 20 item 3 bounds a larger default to 2x the default's CPU time. This times
what a user runs, ``Engine.infer`` (preprocessing, the network, post-processing)
on a 512 x 512 tile (a 2 x 2 mosaic of the CoNSeP sample tiles), through fp32 ONNX
Runtime (its default intra-op threads: the machine's cores), for random-weight
bundles of each variant (speed does not depend on the weights; post-processing
does a little, through the number of nuclei a random network outputs, so the
network alone is timed too). Wall time
(ONNX Runtime works in its own threads, which a thread's CPU time would miss).
Rounds are interleaved, each variant once per round; the ratio is paired per round
against ``fast_hr_convnext_atto`` (the default's architecture).

    .venv/bin/python benchmarks/variant_speed.py --rounds 7 \
        --out benchmarks/results/variant-speed-cpu-DATE.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hvx.assets import sample_paths
from hvx.bundle import save_bundle
from hvx.engine import Engine
from hvx.io import read_image
from hvx.model import create_model
from hvx.postprocess import PostprocessConfig
from hvx.preprocess import PreprocessConfig
from hvx.provenance import provenance, write_json

BASE = "fast_hr_convnext_atto"
VARIANTS = (BASE, "fast_hr_convnext_pico", "fast_convnext_pico", "fast_convnext_tiny")


def _engine(variant: str, root: Path) -> Engine:
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
    return Engine.load(path, backend="onnxruntime", precision="fp32")


def _wall(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    t = [read_image(f) for f in sample_paths()]
    tile = np.concatenate([np.concatenate(t[:2], 1), np.concatenate(t[2:], 1)], 0)
    with tempfile.TemporaryDirectory() as tmp:
        engines = {v: _engine(v, Path(tmp)) for v in args.variants}
        for e in engines.values():  # warm-up (session set-up, first allocation)
            e.infer(tile)
        total = {v: [] for v in engines}
        net = {v: [] for v in engines}
        for _ in range(args.rounds):
            for v, e in engines.items():
                total[v].append(_wall(lambda e=e: e.infer(tile)))
                net[v].append(_wall(lambda e=e: e.heads(tile)))
    rows = {}
    for v in engines:
        ratio = np.array(total[v]) / np.array(total[BASE])
        rows[v] = {
            "infer_s": float(np.median(total[v])),
            "heads_s": float(np.median(net[v])),
            "tiles_512_per_s": float(1.0 / np.median(total[v])),
            "time_vs_default_paired_median": float(np.median(ratio)),
            "time_vs_default_p25_p75": [
                float(np.percentile(ratio, 25)),
                float(np.percentile(ratio, 75)),
            ],
        }
        r = rows[v]
        print(
            f"{v:24s} infer {r['infer_s']:6.2f} s  heads {r['heads_s']:6.2f} s  "
            f"{r['tiles_512_per_s']:5.2f} tiles/s  x{r['time_vs_default_paired_median']:.2f}"
        )
    doc = {
        "benchmark": "variant_speed",
        "tile": "512x512 (2x2 CoNSeP sample tiles)",
        "backend": "onnxruntime fp32, default threads; wall time",
        "rounds": args.rounds,
        "load_average": list(os.getloadavg()),
        "rows": rows,
        "machine": provenance(),
    }
    if args.out:
        write_json(args.out, doc)


if __name__ == "__main__":
    main()
