"""Evaluate a model bundle on the validation images it was never trained on.

``hvx-train --evaluate BUNDLE --data DIR`` runs the shipped inference path
(``hvx.Engine``: the same preprocessing, backend and post-processing users get)
on the validation tiles recorded in the bundle's provenance (the source images
held out by ``split_by_source``), and scores it with ``hvx.metrics``:

- binary PQ, DQ, SQ: per-image values averaged over images (CoNiC's binary PQ);
- per class c: PQ+ (TP/FP/FN/IoU pooled over all images, CoNiC's mPQ+ rule) and
  detection F1 = 2 TP / (2 TP + FP + FN) from the same pooled pairing (IoU > 0.5).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["evaluate_bundle", "main"]


def recorded_val_sources(bundle) -> set[str]:
    """The validation source images recorded in a bundle by ``hvx-train``.

    Raises:
        ValueError: If the bundle records none (not written by hvx-train).
    """
    recorded = (bundle.provenance.get("data") or {}).get("val_sources")
    if not recorded:
        raise ValueError(
            f"expected provenance.data.val_sources in {bundle.path}/model.json (written by "
            "hvx-train), got none: cannot tell which images the model never saw"
        )
    return set(recorded)


def _val_indices(sources: Sequence[str], bundle) -> np.ndarray:
    """Tile indices whose source image is in the bundle's recorded validation set."""
    keep = recorded_val_sources(bundle)
    idx = np.flatnonzero([s in keep for s in sources])
    if idx.size == 0:
        raise ValueError(
            f"none of the validation sources {sorted(keep)} are in the given data "
            f"(its sources: {sorted(set(sources))[:5]}...)"
        )
    return idx


def evaluate_bundle(
    bundle_path: str | Path,
    data: str | Path,
    *,
    backend: str = "auto",
    batch_size: int = 8,
    mpp: float | None = None,
) -> dict:
    """Scores a bundle on its validation tiles.

    Args:
        bundle_path: Model bundle folder written by ``hvx-train``.
        data: The dataset folder it was trained from (CoNSeP-style or CoNiC).
        backend: Engine backend ("auto", "torch", "onnxruntime", "tensorrt").
        batch_size: Tiles per ``engine.infer`` call.
        mpp: Microns per pixel of the data when it differs from the model's
            (the engine rescales); None: the data is at the model's resolution.

    Returns:
        A JSON-ready dict: ``tiles``, ``sources``, binary ``pq``/``dq``/``sq``,
        ``mpq_plus`` and ``per_class`` {name: {pq_plus, f1, tp, fp, fn}}.
    """
    from hvx.bundle import load_bundle
    from hvx.engine import Engine
    from hvx.metrics import conic_scores, pq_stats
    from hvx.training.data import load_dataset

    bundle = load_bundle(bundle_path)
    ds = load_dataset(data)
    idx = _val_indices(ds.sources, bundle)
    engine = Engine.load(bundle_path, backend=backend, mpp=mpp)
    preds = []
    for start in range(0, idx.size, batch_size):
        sel = idx[start : start + batch_size]
        preds.append(engine.infer(ds.images[sel]).to_conic())
    pred = np.concatenate(preds)
    true = np.stack([ds.inst[idx], ds.cls[idx].astype(np.int32)], axis=-1)
    num_classes = len(bundle.class_names)
    scores = conic_scores(true, pred, num_classes=num_classes)
    per_image = [pq_stats(true[i, ..., 0], pred[i, ..., 0]) for i in range(len(idx))]
    per_class = {}
    for c, name in enumerate(bundle.class_names):
        tp, fp, fn, _ = (float(v) for v in scores.stats[c])
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        per_class[name] = {
            "pq_plus": float(scores.pq_plus[c]),
            "f1": f1,
            "tp": int(tp),
            "fp": int(fp),
            "fn": int(fn),
        }
    return {
        "bundle": str(bundle_path),
        "backend": engine.backend,
        "tiles": int(idx.size),
        "sources": sorted(set(np.asarray(ds.sources)[idx].tolist())),
        "pq": float(scores.pq),
        "dq": float(np.mean([s.dq for s in per_image])),
        "sq": float(np.mean([s.sq for s in per_image])),
        "mpq_plus": float(scores.mpq_plus),
        "per_class": per_class,
    }


def _print(report: dict) -> None:
    print(f"{report['tiles']} validation tiles from {', '.join(report['sources'])}")
    print(f"backend {report['backend']}")
    print(f"binary  PQ {report['pq']:.4f}  DQ {report['dq']:.4f}  SQ {report['sq']:.4f}")
    print(f"mPQ+ {report['mpq_plus']:.4f}")
    print(f"{'class':<14} {'PQ+':>7} {'F1':>7} {'TP':>6} {'FP':>6} {'FN':>6}")
    for name, c in report["per_class"].items():
        counts = f"{c['tp']:>6} {c['fp']:>6} {c['fn']:>6}"
        print(f"{name:<14} {c['pq_plus']:>7.4f} {c['f1']:>7.4f} {counts}")


def main(argv: Sequence[str] | None = None) -> int:
    """``hvx-train --evaluate BUNDLE --data DIR [--backend B] [--json OUT]``."""
    p = argparse.ArgumentParser(
        prog="hvx-train --evaluate",
        description="Score a model bundle on the validation images recorded in it.",
    )
    p.add_argument("--evaluate", metavar="BUNDLE", required=True, help="model bundle folder")
    p.add_argument("--data", required=True, help="dataset folder the bundle was trained from")
    p.add_argument("--backend", default="auto", help="engine backend (default auto)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--mpp", type=float, help="microns per pixel of the data (default: model's)")
    p.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    args = p.parse_args(argv)
    try:
        report = evaluate_bundle(
            args.evaluate,
            args.data,
            backend=args.backend,
            batch_size=args.batch_size,
            mpp=args.mpp,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"hvx-train: error: {e}", file=sys.stderr)
        return 2
    _print(report)
    if args.json:
        from hvx.bench.harness import write_json

        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
