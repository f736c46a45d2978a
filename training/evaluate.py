"""Evaluate a model bundle on the validation images it was never trained on.

``hvx-train --evaluate BUNDLE --data DIR`` runs the shipped inference path
(``hvx.Engine``: the same preprocessing, backend and post-processing users get)
on the validation tiles recorded in the bundle's provenance (the source images
held out by ``split_by_source``), and scores it with ``hvx.metrics``:

- binary PQ, DQ, SQ: per-image values averaged over images (CoNiC's binary PQ);
- per class c: PQ+ (TP/FP/FN/IoU pooled over all images, CoNiC's mPQ+ rule) and
  detection F1 = 2 TP / (2 TP + FP + FN) from the same pooled pairing (IoU > 0.5).

Datasets without class labels (instance-only folders such as MoNuSeg, see
``hvx.training.datasets``) are scored as users see large images: each whole
validation image goes through the tiled large-image path
(``hvx.tiling.infer_image``: 256 tiles, 64 px overlap, stitched), and the report
gives whole-image binary PQ, DQ, SQ averaged over images and per organ (the text
before the first ``_`` of a source). Their validation images are those the bundle
records; a bundle that never trained on the dataset (none of its sources
recorded, the folder not among its training data) is scored on the split
``hvx-train`` would make (``split_by_source``, val_fraction 0.2, seed 0).

``--data`` may be given several times (one report per dataset), and the report
also carries the float16 parity of the network (``hvx.precision.check_fp16`` on
the packaged sample tiles, on the CPU: PQ of the fp16 instance maps against the
fp32 ones).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hvx.engine import Engine
from hvx.metrics import conic_scores, pq_stats
from hvx.stain import normalizer_from_options
from hvx.tiling import infer_image

__all__ = ["evaluate_bundle", "evaluate_images", "fp16_parity", "main"]


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
    stain: str | None = None,
) -> dict:
    """Scores a bundle on its validation tiles.

    Args:
        bundle_path: Model bundle folder written by ``hvx-train``.
        data: The dataset folder it was trained from (CoNSeP-style or CoNiC).
        backend: Engine backend ("auto", "torch", "onnxruntime", "tensorrt").
        batch_size: Tiles per ``engine.infer`` call.
        mpp: Microns per pixel of the data when it differs from the model's
            (the engine rescales); None: the data is at the model's resolution.
        stain: ``"reinhard"``/``"macenko"``: normalise each tile to the default
            target first (:mod:`hvx.stain`, fitted per tile), as ``hvx infer
            --stain-norm`` does; None: as read.

    Returns:
        A JSON-ready dict: ``tiles``, ``sources``, binary ``pq``/``dq``/``sq``,
        ``mpq_plus``, ``per_class`` {name: {pq_plus, f1, tp, fp, fn}} and ``stain``.
    """
    from hvx.bundle import load_bundle
    from hvx.training.data import load_dataset

    bundle = load_bundle(bundle_path)
    ds = load_dataset(data)
    idx = _val_indices(ds.sources, bundle)
    engine = Engine.load(bundle_path, backend=backend, mpp=mpp)
    norm = normalizer_from_options(stain)
    preds = []
    for start in range(0, idx.size, batch_size):
        batch = ds.images[idx[start : start + batch_size]]
        if norm is not None:
            batch = np.stack([norm(im) for im in batch])
        preds.append(engine.infer(batch).to_conic())
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
        "stain": stain,
    }


def _trained_on(bundle, data: Path) -> bool:
    """Whether the bundle's provenance names ``data``'s folder among its training data."""
    d = bundle.provenance.get("data") or {}
    names = {Path(str(d.get("source", ""))).name}
    names |= {str(x.get("name")) for x in d.get("datasets") or []}
    names |= {Path(str(p).strip()).name for p in str(d.get("source", "")).split(",")}
    return data.name in names


def image_val_indices(sources: list[str], bundle, data: Path) -> tuple[np.ndarray, str]:
    """Validation images of an instance-only dataset for a bundle, and how they were chosen."""
    from hvx.training.data import split_by_source

    keep = set((bundle.provenance.get("data") or {}).get("val_sources") or ())
    idx = np.flatnonzero([s in keep for s in sources])
    if idx.size:
        return idx, "recorded"
    if _trained_on(bundle, data):
        raise ValueError(
            f"{bundle.path} trained on {data.name} but records none of its sources as "
            "validation: cannot tell which images it never saw"
        )
    _, idx = split_by_source(sources, val_fraction=0.2, seed=0)
    return idx, "default split (the model never trained on this dataset)"


def evaluate_images(
    bundle_path: str | Path,
    data: str | Path,
    *,
    backend: str = "auto",
    tile: int = 256,
    overlap: int = 64,
    stain: str | None = None,
) -> dict:
    """Whole-image binary PQ of a bundle on an instance-only dataset's validation images.

    Args:
        bundle_path: Model bundle folder.
        data: Instance-only folder (``hvx.training.datasets.load_instance_folder``).
        backend: Engine backend.
        tile: Tile size of the tiled path.
        overlap: Tile overlap.
        stain: ``"reinhard"``/``"macenko"``: normalise each image (fitted on the
            whole image) before tiling, as ``hvx infer --stain-norm``; None: as read.

    Returns:
        JSON-ready: ``stain``, ``images``, ``sources``, ``split`` (how they were chosen),
        ``pq``/``dq``/``sq`` (means over images), ``per_image`` and ``per_organ``
        ({organ: {"pq", "images"}}), ``nuclei_true``/``nuclei_pred`` totals.
    """
    from hvx.bundle import load_bundle
    from hvx.training.datasets import load_instance_folder

    bundle = load_bundle(bundle_path)
    ds = load_instance_folder(data)
    idx, how = image_val_indices(ds.sources, bundle, Path(data))
    engine = Engine.load(bundle_path, backend=backend)
    norm = normalizer_from_options(stain)
    per_image = {}
    n_true = n_pred = 0
    for i in idx.tolist():
        image = ds.images[i] if norm is None else norm(ds.images[i])
        res = infer_image(engine, image, tile=tile, overlap=overlap)
        st = pq_stats(ds.inst[i], res.inst)
        n_true += len(np.unique(ds.inst[i])) - 1
        n_pred += len(np.unique(res.inst)) - 1
        per_image[ds.sources[i]] = {"pq": st.pq, "dq": st.dq, "sq": st.sq}
    organs: dict[str, list[float]] = {}
    for src, st in per_image.items():
        organs.setdefault(src.split("_", 1)[0], []).append(st["pq"])
    return {
        "bundle": str(bundle_path),
        "backend": engine.backend,
        "images": int(idx.size),
        "sources": sorted(per_image),
        "split": how,
        "tiling": {"tile": tile, "overlap": overlap},
        "stain": stain,
        "pq": float(np.mean([v["pq"] for v in per_image.values()])),
        "dq": float(np.mean([v["dq"] for v in per_image.values()])),
        "sq": float(np.mean([v["sq"] for v in per_image.values()])),
        "per_organ": {
            o: {"pq": float(np.mean(v)), "images": len(v)} for o, v in sorted(organs.items())
        },
        "per_image": per_image,
        "nuclei_true": int(n_true),
        "nuclei_pred": int(n_pred),
    }


def fp16_parity(bundle_path: str | Path) -> dict:
    """``hvx.precision.check_fp16`` of a bundle's network on the sample tiles, on the CPU."""
    from hvx.bundle import load_bundle
    from hvx.precision import FP16_MIN_PQ, check_fp16

    bundle = load_bundle(bundle_path)
    chk = check_fp16(bundle.build_model(), bundle.preprocess, bundle.postprocess)
    return {"pq": chk.pq, "max_abs": chk.max_abs, "tiles": chk.tiles, "ok": chk.pq >= FP16_MIN_PQ}


def _is_instances(data: Path) -> bool:
    npz = data / "labels.npz"
    if not npz.is_file():
        return False
    with np.load(npz, allow_pickle=False) as z:
        return "cls" not in z.files


def _print_images(report: dict) -> None:
    print(f"{report['images']} whole validation images ({report['split']})")
    print(f"backend {report['backend']}, tiled {report['tiling']}")
    print(f"binary  PQ {report['pq']:.4f}  DQ {report['dq']:.4f}  SQ {report['sq']:.4f}")
    print(f"nuclei: {report['nuclei_pred']} found, {report['nuclei_true']} annotated")
    for organ, o in report["per_organ"].items():
        print(f"  {organ:<10} PQ {o['pq']:.4f}  ({o['images']} images)")


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
    p.add_argument(
        "--data",
        required=True,
        action="append",
        help="dataset folder (repeat for several): CoNSeP-style/CoNiC tiles or an "
        "instance-only folder (whole-image tiled scoring)",
    )
    p.add_argument("--no-fp16", action="store_true", help="skip the fp16 parity check")
    p.add_argument("--backend", default="auto", help="engine backend (default auto)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--mpp", type=float, help="microns per pixel of the data (default: model's)")
    p.add_argument(
        "--stain-norm",
        choices=("reinhard", "macenko"),
        default=None,
        help="normalise every image to the default stain target first (hvx.stain)",
    )
    p.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    args = p.parse_args(argv)
    reports = {}
    try:
        for data in args.data:
            name = Path(data).name
            if _is_instances(Path(data)):
                reports[name] = evaluate_images(
                    args.evaluate, data, backend=args.backend, stain=args.stain_norm
                )
                _print_images(reports[name])
            else:
                reports[name] = evaluate_bundle(
                    args.evaluate,
                    data,
                    backend=args.backend,
                    batch_size=args.batch_size,
                    mpp=args.mpp,
                    stain=args.stain_norm,
                )
                _print(reports[name])
        fp16 = None if args.no_fp16 else fp16_parity(args.evaluate)
    except (ValueError, FileNotFoundError) as e:
        print(f"hvx-train: error: {e}", file=sys.stderr)
        return 2
    if fp16 is not None:
        print(f"fp16 vs fp32 instance maps (sample tiles, CPU): PQ {fp16['pq']:.4f}")
    # one dataset: its report as before (plus fp16); several: one entry per dataset
    report = dict(next(iter(reports.values()))) if len(reports) == 1 else {"datasets": reports}
    report["fp16"] = fp16
    if args.json:
        from hvx.provenance import provenance, write_json

        write_json(args.json, {**report, "machine": provenance()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
