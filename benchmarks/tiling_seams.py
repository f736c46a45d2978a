"""Tiled vs one-pass inference on a large mosaic of real tiles, and why they differ.

    .venv/bin/python benchmarks/tiling_seams.py [--bundle DIR] [--size 4096] [--out JSON]

Runs the model on a SIZE x SIZE mosaic of CoNSeP tiles (../shared/data/consep)
four ways and compares instance maps with binary PQ and nucleus counts:

- ``one_pass``: the network on the whole image, HoVer-Net post-processing on the
  whole image (what ``engine.infer(image)`` does when it fits in memory);
- ``tiled_256``, ``tiled_1024``: ``hvx.tiling.infer_image`` (tiles, overlap 64 /
  128, ownership by centre region, seam stitching);
- ``tiled_pp_on_one_pass_heads``: the one-pass network outputs cut into the same
  256 tiles, post-processed per tile and stitched. Against ``one_pass`` it
  isolates post-processing (HoVer-Net min-max normalises the HV maps and their
  Sobel gradients over the whole input, so markers depend on the input's extent);
  against ``tiled_256`` it isolates the network (context lost at tile borders).

The seam logic itself is verified exactly by tests/tiling (an oracle engine:
tiled == one-pass, no duplicates).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tiling"))


class HeadsEngine:
    """Engine stand-in: post-processes crops of precomputed whole-image heads.

    Tiles are found by the hash of their pixels (every tile of the plan is
    registered with :meth:`locate` first), as in tests/tiling/synth.OracleEngine.
    """

    def __init__(self, engine, image, heads, tile: int) -> None:
        self.preprocess_config = engine.preprocess_config
        self.postprocess_config = engine.postprocess_config
        self.class_names, self.class_colors = engine.class_names, engine.class_colors
        self.image, self.heads, self.tile = image, heads, tile
        self._where: dict[bytes, tuple[int, int]] = {}

    def locate(self, y: int, x: int) -> None:
        t = self.tile
        crop = np.full((t, t, 3), 255, np.uint8)
        src = self.image[y : y + t, x : x + t]
        crop[: src.shape[0], : src.shape[1]] = src
        self._where[hashlib.sha1(crop.tobytes()).digest()] = (y, x)

    def _crop(self, a: np.ndarray, y: int, x: int) -> np.ndarray:
        t = self.tile
        out = np.zeros((*a.shape[:-2], t, t), a.dtype)
        src = a[..., y : y + t, x : x + t]
        out[..., : src.shape[-2], : src.shape[-1]] = src
        return out

    def infer(self, batch):
        from hvx.postprocess import postprocess

        np_prob, hv, tp = [], [], []
        for img in batch:
            y, x = self._where[hashlib.sha1(np.ascontiguousarray(img).tobytes()).digest()]
            np_prob.append(self._crop(self.heads.np_prob[0], y, x))
            hv.append(self._crop(self.heads.hv[0], y, x))
            tp.append(self._crop(self.heads.tp_prob[0], y, x))
        return postprocess(np.stack(np_prob), np.stack(hv), np.stack(tp), self.postprocess_config)


def _compare(name: str, inst: np.ndarray, ref: np.ndarray, ref_name: str, seconds) -> dict:
    from hvx.metrics import pq_stats

    s = pq_stats(ref, inst)
    n, n_ref = len(np.unique(inst)) - 1, len(np.unique(ref)) - 1
    row = {
        "run": name,
        "vs": ref_name,
        "nuclei": n,
        "nuclei_vs": n_ref,
        "count_diff_pct": round(100 * (n - n_ref) / max(n_ref, 1), 2),
        "pq": round(s.pq, 4),
        "dq": round(s.dq, 4),
        "sq": round(s.sq, 4),
        "seconds": None if seconds is None else round(seconds, 1),
    }
    print(row, flush=True)
    return row


def main() -> int:
    from synth import mosaic

    from hvx import Engine
    from hvx.postprocess import postprocess
    from hvx.provenance import provenance, write_json
    from hvx.tiling import infer_image, plan_tiles

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default=None, help="model bundle (default: the shipped one)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "consep"))
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--out", default=None, help="results JSON")
    p.add_argument(
        "--geometries",
        default="256:64,1024:128",
        help="tile:overlap pairs to run tiled, comma-separated (the first tile size must be "
        "256 for the post-processing-only row)",
    )
    p.add_argument("--precision", default="auto", help="Engine.load precision")
    args = p.parse_args()
    geometries = [tuple(int(v) for v in g.split(":")) for g in args.geometries.split(",")]

    engine = Engine.load(args.bundle, precision=args.precision)
    image, _, _ = mosaic(Path(args.data), args.size // 256, args.size // 256, seed=0)
    t0 = time.perf_counter()
    heads, _ = engine.heads(image[None])
    heads = heads.numpy()
    one = postprocess(heads.np_prob, heads.hv, heads.tp_prob, engine.postprocess_config).inst[0]
    t_one = time.perf_counter() - t0
    rows = [_compare("one_pass", one, one, "one_pass", t_one)]
    tiled = {}
    for tile, overlap in geometries:
        t0 = time.perf_counter()
        res = infer_image(engine, image, tile=tile, overlap=overlap)
        tiled.setdefault(tile, res.inst)
        name = f"tiled_{tile}" + (
            "" if (tile, overlap) in ((256, 64), (1024, 128)) else f"_o{overlap}"
        )
        rows.append(_compare(name, res.inst, one, "one_pass", time.perf_counter() - t0))
        rows[-1]["stitch"] = res.stats.to_dict()
    fake = HeadsEngine(engine, image, heads, 256)
    for t in plan_tiles(*image.shape[:2], 256, 64, align=32):
        fake.locate(t.y0, t.x0)
    res = infer_image(fake, image, tile=256, overlap=64)
    rows.append(_compare("tiled_pp_on_one_pass_heads", res.inst, one, "one_pass", None))
    rows.append(_compare("tiled_pp_on_one_pass_heads", res.inst, tiled[256], "tiled_256", None))
    doc = {
        "benchmark": "tiling_seams",
        "what": __doc__.strip().splitlines()[0],
        "bundle": str(args.bundle or "default"),
        "size": args.size,
        "engine": {"backend": engine.backend, "precision": engine.precision},
        "geometries": geometries,
        "loadavg": list(os.getloadavg()),
        "provenance": provenance(),
        "rows": rows,
    }
    if args.out:
        write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
