"""Choose a bundle's post-processing thresholds on its *training* images.

``hvx-train --tune-postprocess BUNDLE --data DIR [--write]`` runs the network once
on tiles from the source images the bundle was trained on (never its validation
images, which stay an honest held-out score for ``--evaluate``), then scores every
combination of a small grid of :class:`hvx.postprocess.PostprocessConfig` fields
(foreground threshold, marker threshold, Sobel size, smallest object) with the
same post-processing and metric users get, and picks the best binary PQ (CoNiC's
per-image mean). HoVer-Net's constants were chosen for HoVer-Net's outputs; a
small or briefly trained model has softer maps and may separate touching nuclei
better with other thresholds. ``--write`` stores the winner in the bundle's
``model.json`` (atomically), where ``hvx.Engine`` reads it.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hvx.engine import Engine
from hvx.io.atomic import atomic_write
from hvx.metrics import conic_scores, pq_stats
from hvx.postprocess import PostprocessConfig, postprocess
from hvx.training.evaluate import recorded_val_sources

__all__ = ["DEFAULT_GRID", "main", "tune_postprocess", "write_postprocess"]

#: Values tried per PostprocessConfig field (the SPEC §3a default is in each list).
DEFAULT_GRID: dict[str, tuple] = {
    "np_threshold": (0.4, 0.5, 0.6, 0.7),
    "marker_threshold": (0.3, 0.4, 0.5, 0.6),
    "sobel_ksize": (11, 21),
    "min_object_size": (10, 30, 50),
}


def _train_indices(sources: Sequence[str], bundle, max_tiles: int) -> np.ndarray:
    """Tiles whose source image is NOT in the bundle's validation set (evenly thinned)."""
    held_out = recorded_val_sources(bundle)
    idx = np.flatnonzero([s not in held_out for s in sources])
    if idx.size == 0:
        raise ValueError("expected tiles from training sources in the data, got only held-out ones")
    if idx.size > max_tiles:
        idx = idx[np.linspace(0, idx.size - 1, max_tiles).round().astype(int)]
    return idx


def _check_grid(grid: dict[str, Sequence]) -> dict[str, tuple]:

    fields = {f.name for f in dataclasses.fields(PostprocessConfig)}
    bad = sorted(set(grid) - fields)
    if bad or not grid or any(len(v) == 0 for v in grid.values()):
        raise ValueError(
            f"expected a grid of non-empty value lists over {sorted(fields)}, got {grid!r}"
        )
    return {k: tuple(v) for k, v in grid.items()}


def _tiles_for_tuning(path: str | Path, bundle, max_tiles: int):
    """Training tiles of one dataset: ``(name, images, inst, cls, typed, sources)``.

    Instance-only data (large images, no classes) is cut into 256 x 256 tiles first.
    """
    from hvx.training.datasets import cut_tiles, load_any

    ds = load_any(path)
    typed = bool(ds.typed.all())
    if not typed:
        keep = np.flatnonzero([s not in _held_out(bundle) for s in ds.sources])
        ds = cut_tiles(ds.subset(keep), 256)
    idx = _train_indices(ds.sources, bundle, max_tiles)
    return Path(path).name, ds.images[idx], ds.inst[idx], ds.cls[idx], typed, ds.sources, idx


def _held_out(bundle) -> set[str]:

    return recorded_val_sources(bundle)


def _heads(engine, images: np.ndarray, batch_size: int) -> list[tuple]:
    """``(np_prob, hv, tp_prob)`` numpy arrays of ``Engine.heads``, per batch."""
    heads = []
    for start in range(0, len(images), batch_size):
        h = engine.heads(images[start : start + batch_size])[0].numpy()
        heads.append((h.np_prob, h.hv, h.tp_prob))
    return heads


def _score_one(heads: list[tuple], true: np.ndarray, typed: bool, cfg, n_cls: int) -> dict:
    """Binary PQ (and mPQ+ with class labels) of one dataset's heads under ``cfg``."""
    pred = np.concatenate([postprocess(*h, cfg).to_conic() for h in heads])
    if not typed:
        pqs = [pq_stats(true[i, ..., 0], pred[i, ..., 0]).pq for i in range(len(pred))]
        return {"pq": float(np.mean(pqs))}
    s = conic_scores(true, pred, num_classes=n_cls)
    return {"pq": float(s.pq), "mpq_plus": float(s.mpq_plus)}


def _score(sets: list[tuple], cfg, n_cls: int) -> dict:
    """One dataset's scores, or the mean binary PQ/mPQ+ over several (with each)."""
    per = {name: _score_one(h, t, typed, cfg, n_cls) for name, h, t, typed in sets}
    if len(per) == 1:
        return next(iter(per.values()))
    typed_mpq = [v["mpq_plus"] for v in per.values() if "mpq_plus" in v]
    return {
        "pq": float(np.mean([v["pq"] for v in per.values()])),
        "mpq_plus": float(np.mean(typed_mpq)) if typed_mpq else 0.0,
        "datasets": per,
    }


def tune_postprocess(
    bundle_path: str | Path,
    data: str | Path | Sequence[str | Path],
    *,
    grid: dict[str, Sequence] | None = None,
    max_tiles: int = 96,
    backend: str = "auto",
    batch_size: int = 8,
) -> dict:
    """Scores a grid of post-processing settings on the bundle's training tiles.

    Args:
        bundle_path: Model bundle folder written by ``hvx-train``.
        data: The dataset it was trained from, at the model's resolution, or a list
            of datasets (instance-only ones are cut into 256 tiles and scored by
            binary PQ alone); the objective is then the mean of their binary PQs.
        grid: {PostprocessConfig field: values}; None = :data:`DEFAULT_GRID`.
            Fields not in the grid keep the bundle's values.
        max_tiles: At most this many training tiles (evenly spaced).
        backend: Engine backend.
        batch_size: Tiles per network call.

    Returns:
        JSON-ready dict: ``tiles``, ``current`` (the bundle's config and its
        ``pq``/``mpq_plus``), ``best`` (same for the best PQ; ties keep the
        earlier grid point, the bundle's current config first) and ``results``
        (every grid point, in grid order).

    Raises:
        ValueError: On a bundle without recorded validation sources, a bad grid or
            data with no training tiles.
    """
    from hvx.bundle import load_bundle

    grid = _check_grid(DEFAULT_GRID if grid is None else grid)
    bundle = load_bundle(bundle_path)
    paths = [data] if isinstance(data, str | Path) else list(data)
    engine = Engine.load(bundle_path, backend=backend)
    sets, used_sources, n_tiles = [], set(), 0
    for path in paths:
        name, images, inst, cls, typed, sources, idx = _tiles_for_tuning(path, bundle, max_tiles)
        true = np.stack([inst, cls.astype(np.int32)], axis=-1)
        sets.append((name, _heads(engine, images, batch_size), true, typed))
        used_sources |= {sources[i] for i in idx}
        n_tiles += len(images)
    base = bundle.postprocess.to_dict()
    n_cls = len(bundle.class_names)
    current = {"config": base, **_score(sets, bundle.postprocess, n_cls)}
    results, best = [], current
    for values in itertools.product(*grid.values()):
        change = dict(zip(grid, values, strict=True))
        cfg = dataclasses.replace(bundle.postprocess, **change)
        row = {"change": change, **_score(sets, cfg, n_cls)}
        results.append(row)
        if row["pq"] > best["pq"]:
            best = {"config": {**base, **change}, **{k: v for k, v in row.items() if k != "change"}}
    return {
        "bundle": str(bundle_path),
        "tiles": int(n_tiles),
        "sources": sorted(used_sources),
        "current": current,
        "best": best,
        "results": results,
    }


def write_postprocess(bundle_path: str | Path, config: dict) -> None:
    """Replaces the ``postprocess`` block of a bundle's model.json, atomically.

    Raises:
        ValueError: If ``config`` is not a valid PostprocessConfig dict (checked by
            reloading the bundle before the file is replaced).
    """
    from hvx.bundle import MANIFEST_FILE, load_bundle

    PostprocessConfig.from_dict(config)
    path = Path(bundle_path) / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["postprocess"] = config
    atomic_write(path, json.dumps(manifest, indent=2, allow_nan=False) + "\n")
    load_bundle(bundle_path)


def main(argv: Sequence[str] | None = None) -> int:
    """``hvx-train --tune-postprocess BUNDLE --data DIR [--write] [--json OUT]``."""
    p = argparse.ArgumentParser(
        prog="hvx-train --tune-postprocess",
        description="Pick post-processing thresholds on the bundle's training images.",
    )
    p.add_argument("--tune-postprocess", metavar="BUNDLE", required=True, dest="bundle")
    p.add_argument(
        "--data",
        required=True,
        action="append",
        help="dataset folder the bundle was trained from (repeat for several: the mean "
        "of their binary PQs is maximised)",
    )
    p.add_argument("--max-tiles", type=int, default=96, help="training tiles used (default 96)")
    p.add_argument("--backend", default="auto", help="engine backend (default auto)")
    p.add_argument("--write", action="store_true", help="store the best config in the bundle")
    p.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    args = p.parse_args(argv)
    try:
        data = args.data[0] if len(args.data) == 1 else args.data
        report = tune_postprocess(
            data=data, bundle_path=args.bundle, max_tiles=args.max_tiles, backend=args.backend
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"hvx-train: error: {e}", file=sys.stderr)
        return 2
    cur, best = report["current"], report["best"]
    print(f"{report['tiles']} training tiles from {', '.join(report['sources'])}")
    print(f"bundle's config: PQ {cur['pq']:.4f}  mPQ+ {cur['mpq_plus']:.4f}")
    changed = {k: v for k, v in best["config"].items() if cur["config"].get(k) != v}
    print(f"best:            PQ {best['pq']:.4f}  mPQ+ {best['mpq_plus']:.4f}  {changed or 'same'}")
    if args.json:
        from hvx.io.atomic import atomic_write

        atomic_write(args.json, json.dumps(report, indent=2) + "\n")
    if args.write and changed:
        write_postprocess(args.bundle, best["config"])
        print(f"wrote the best config into {args.bundle}/model.json")
    return 0
