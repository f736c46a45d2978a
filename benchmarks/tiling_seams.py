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

With ``--images`` it studies tile geometry on real images instead (e.g. MoNuSeg's
1000 x 1000 H&E at 0.25 mpp, ``--images monuseg:6``): for each ``tile:overlap`` it
runs the tiled path and a one-pass ``engine.infer`` of the whole image, matches
nuclei one to one (IoU > 0.5) to the one-pass nuclei and to the ground truth, and
says where the unmatched ones lie (within ``--band`` px of a core boundary, i.e.
a seam, or elsewhere); it also matches the first geometry's nuclei to each other
geometry's. ``--time N`` then times the geometries on a mosaic of the first four
images (2 x 2) in N interleaved rounds (``hvx.bench.paired``) at ``--threads``.

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


def _match(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches (IoU > 0.5) of two instance maps: matched ids of ``a`` and ``b``."""
    fa, fb = a.ravel().astype(np.int64), b.ravel().astype(np.int64)
    both = (fa > 0) & (fb > 0)
    key = fa[both] * (int(fb.max()) + 1) + fb[both]
    pairs, inter = np.unique(key, return_counts=True)
    ia, ib = pairs // (int(fb.max()) + 1), pairs % (int(fb.max()) + 1)
    area_a, area_b = np.bincount(fa), np.bincount(fb)
    iou = inter / (area_a[ia] + area_b[ib] - inter)
    keep = iou > 0.5  # IoU > 0.5 is unique on both sides
    return ia[keep], ib[keep]


def _centroids(inst: np.ndarray) -> dict[int, tuple[float, float]]:
    ys, xs = np.nonzero(inst)
    ids = inst[ys, xs]
    n = np.bincount(ids)
    cy, cx = np.bincount(ids, ys) / np.maximum(n, 1), np.bincount(ids, xs) / np.maximum(n, 1)
    return {int(i): (float(cy[i]), float(cx[i])) for i in np.flatnonzero(n)}


def _seam_distance(plan, y: float, x: float) -> float:
    """Distance (px) from a point to the nearest interior core boundary (a seam)."""
    ys, xs = np.asarray(plan.y_bounds[1:-1], float), np.asarray(plan.x_bounds[1:-1], float)
    d = [np.abs(ys - y).min() if ys.size else np.inf, np.abs(xs - x).min() if xs.size else np.inf]
    return float(min(d))


def _unmatched(inst: np.ndarray, matched: np.ndarray, plan, band: int) -> dict:
    """Unmatched nuclei of ``inst``: count, and how many lie within ``band`` px of a seam."""
    cents = _centroids(inst)
    left = sorted(set(cents) - set(matched.tolist()))
    near = sum(_seam_distance(plan, *cents[i]) <= band for i in left)
    return {"n": len(left), "near_seam": int(near)}


def _band_fraction(plan, band: int) -> float:
    """Fraction of the image within ``band`` px of a seam (a uniform spread's share there)."""
    ys = np.arange(plan.height)[:, None].astype(float)
    xs = np.arange(plan.width)[None, :].astype(float)
    dy = np.abs(ys - np.asarray(plan.y_bounds[1:-1], float)[None, :]).min(1, initial=np.inf)
    dx = np.abs(xs.T - np.asarray(plan.x_bounds[1:-1], float)[None, :]).min(1, initial=np.inf)
    return float(((dy[:, None] <= band) | (dx[None, :] <= band)).mean())


class _OneThread:
    """The engine with post-processing pinned to ``threads`` (the tiled path passes none)."""

    def __init__(self, engine, threads: int) -> None:
        self._engine, self._threads = engine, threads

    def infer(self, batch):
        return self._engine.infer(batch, num_threads=self._threads)

    def __getattr__(self, name):
        return getattr(self._engine, name)


def _load_images(spec: str):
    """``monuseg:K`` (first K MoNuSeg images and labels), ``consep:SIZE`` (a SIZE x SIZE
    mosaic of CoNSeP tiles and labels) or comma-separated PNG paths; ``+`` joins specs."""
    import cv2

    if "+" in spec:
        for part in spec.split("+"):
            yield from _load_images(part)
        return
    if spec.startswith("consep:"):
        from synth import mosaic

        n = int(spec.split(":")[1]) // 256
        image, gt, _ = mosaic(ROOT.parent / "shared" / "data" / "consep", n, n, seed=0)
        yield f"consep_mosaic_{n * 256}", image, gt
        return
    if spec.startswith("monuseg:"):
        root = ROOT.parent / "shared" / "data" / "monuseg"
        data = np.load(root / "labels.npz")
        k = int(spec.split(":")[1])
        for name, gt in list(zip(data["names"], data["inst"], strict=True))[:k]:
            bgr = cv2.imread(str(root / "images" / f"{name}.png"), cv2.IMREAD_COLOR)
            yield str(name), bgr[..., ::-1].copy(), gt
        return
    for path in spec.split(","):
        yield Path(path).stem, cv2.imread(path, cv2.IMREAD_COLOR)[..., ::-1].copy(), None


def geometry_study(args, engine, geometries) -> dict:
    """Tiled geometries vs one pass (and the ground truth) on real images; see the docstring."""
    from hvx.metrics import pq_stats
    from hvx.tiling import infer_image, plan_tiles

    first = f"{geometries[0][0]}:{geometries[0][1]}"
    per_image, images = [], []
    for name, image, gt in _load_images(args.images):
        images.append(image)
        one = engine.infer(image[None]).inst[0]
        row: dict = {
            "image": name,
            "shape": list(image.shape[:2]),
            "one_pass": len(_centroids(one)),
        }
        if gt is not None:
            row["gt"] = len(_centroids(gt))
            row["one_pass_pq_vs_gt"] = round(pq_stats(gt, one).pq, 4)
        tiled = {}
        for tile, overlap in geometries:
            key = f"{tile}:{overlap}"
            res = infer_image(engine, image, tile=tile, overlap=overlap)
            plan = plan_tiles(*image.shape[:2], tile, overlap, align=32)
            tiled[key] = (res.inst, plan)
            mt, mo = _match(res.inst, one)
            g = {
                "nuclei": len(res.nuclei),
                "matched_one_pass": len(mt),
                "extra_vs_one_pass": _unmatched(res.inst, mt, plan, args.band),
                "missed_vs_one_pass": _unmatched(one, mo, plan, args.band),
                "seam_band_area_fraction": round(_band_fraction(plan, args.band), 4),
                "pq_vs_one_pass": round(pq_stats(one, res.inst).pq, 4),
                "stitch": res.stats.to_dict(),
            }
            if gt is not None:
                g["pq_vs_gt"] = round(pq_stats(gt, res.inst).pq, 4)
                g["matched_gt"] = len(_match(res.inst, gt)[0])
            if key != first:  # where the first geometry's nuclei went
                a_inst, a_plan = tiled[first]
                ma, mb = _match(a_inst, res.inst)
                only_a, only_b = _unmatched(a_inst, ma, a_plan, args.band), None
                only_b = _unmatched(res.inst, mb, plan, args.band)
                one_ids = set(_match(a_inst, one)[0].tolist())
                cents = _centroids(a_inst)
                lost = sorted(set(cents) - set(ma.tolist()))
                g[f"vs_{first}"] = {
                    f"only_{first}": only_a,
                    f"only_{first}_near_its_seams_not_these": int(
                        sum(
                            _seam_distance(a_plan, *cents[i]) <= args.band
                            and _seam_distance(plan, *cents[i]) > args.band
                            for i in lost
                        )
                    ),
                    f"only_{first}_matching_one_pass": int(sum(i in one_ids for i in lost)),
                    f"only_{key}": only_b,
                }
                if gt is not None:
                    gt_ids = set(_match(a_inst, gt)[0].tolist())
                    g[f"vs_{first}"][f"only_{first}_matching_gt"] = int(
                        sum(i in gt_ids for i in lost)
                    )
            row[key] = g
            print(name, key, {k: v for k, v in g.items() if k != "stitch"}, flush=True)
        per_image.append(row)
    return {"images": per_image, "mosaic_source": images[:4]}


def time_geometries(engine, images, geometries, rounds: int) -> dict:
    """Interleaved paired timing of the geometries on a 2 x 2 mosaic of ``images``."""
    from hvx.bench.paired import interleaved, loadavg, paired_ratio, summary
    from hvx.tiling import infer_image

    a, b, c, d = images[:4]
    image = np.concatenate([np.concatenate([a, b], 1), np.concatenate([c, d], 1)], 0)
    fns = {
        f"{t}:{o}": (lambda t=t, o=o: infer_image(engine, image, tile=t, overlap=o))
        for t, o in geometries
    }
    load0 = loadavg()
    times = interleaved(fns, rounds, warmup=1)
    base = next(iter(fns))
    out = {
        "image": list(image.shape[:2]),
        "rounds": rounds,
        "loadavg_before": load0,
        "loadavg_after": loadavg(),
        "seconds": {k: summary(v) for k, v in times.items()},
        "raw_seconds": times,
        f"paired_ratio_vs_{base}": {k: paired_ratio(times[base], v) for k, v in times.items()},
    }
    print(out, flush=True)
    return out


def _parse_args() -> argparse.Namespace:
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
    p.add_argument("--images", default=None, help="geometry study: monuseg:K or PNG paths")
    p.add_argument("--band", type=int, default=32, help="px from a seam counted 'near' it")
    p.add_argument("--time", type=int, default=0, help="interleaved timing rounds (0: none)")
    p.add_argument("--threads", type=int, default=None, help="pin every runtime's threads")
    p.add_argument(
        "--time-only", action="store_true", help="with --images and --time: only the timing"
    )
    return p.parse_args()


def _load_engine(args):
    """The engine, with every runtime pinned to ``--threads`` when given; thread record."""
    from hvx import Engine

    threads = None
    if args.threads:
        from hvx.bench.paired import pin_threads

        threads = pin_threads(args.threads)
    engine = Engine.load(args.bundle, precision=args.precision)
    if args.threads and engine.backend == "onnxruntime":
        from hvx import _artifacts
        from hvx.backends.onnxruntime import OnnxRuntimeBackend
        from hvx.bundle import load_bundle

        path = _artifacts.onnx_for_bundle(load_bundle(engine.source), None)
        engine.runner = OnnxRuntimeBackend(path, threads=args.threads)
    if args.threads:
        engine = _OneThread(engine, args.threads)
    return engine, threads


def mosaic_study(args, engine, geometries) -> list[dict]:
    """The CoNSeP-mosaic rows (see the module docstring)."""
    from synth import mosaic

    from hvx.postprocess import postprocess
    from hvx.tiling import infer_image, plan_tiles

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
    return rows


def main() -> int:
    from hvx.provenance import provenance, write_json

    args = _parse_args()
    geometries = [tuple(int(v) for v in g.split(":")) for g in args.geometries.split(",")]
    engine, threads = _load_engine(args)
    doc = {
        "benchmark": "tiling_geometry" if args.images else "tiling_seams",
        "what": __doc__.strip().splitlines()[0],
        "bundle": str(args.bundle or "default"),
        "engine": {"backend": engine.backend, "precision": engine.precision},
        "geometries": geometries,
    }
    if args.images and args.time_only:
        images = [image for _, image, _ in _load_images(args.images)]
        doc["threads"] = threads
        doc["timing"] = time_geometries(engine, images, geometries, args.time)
    elif args.images:
        study = geometry_study(args, engine, geometries)
        doc["band_px"], doc["threads"], doc["images"] = args.band, threads, study["images"]
        if args.time:
            doc["timing"] = time_geometries(engine, study["mosaic_source"], geometries, args.time)
    else:
        doc["size"], doc["rows"] = args.size, mosaic_study(args, engine, geometries)
    doc["loadavg"], doc["provenance"] = list(os.getloadavg()), provenance()
    if args.out:
        write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
