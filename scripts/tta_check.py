"""Test-time augmentation check of a bundle on its recorded validation tiles.

Scores binary PQ (CoNiC rules, hvx.metrics) of the bundle's own post-processing
on the heads as they are, averaged over 4 flips, and over 8 (flips and
transposes), each also with the foreground probability fused with the type
head's 1 - p(background). The model card's "Test-time augmentation" figures
come from this script (2026-11-28, the previous default model: 0.3457 / 0.3487 / 0.3497).

    .venv/bin/python scripts/tta_check.py engine/models/default --data ../shared/data/consep
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from hvx.bundle import load_bundle
from hvx.engine import Engine
from hvx.metrics import pq_stats
from hvx.postprocess import instances_from_hv
from hvx.training.data import load_dataset
from hvx.training.evaluate import _val_indices

# (flip left-right, flip up-down, transpose) of each view
VIEWS_4 = [(False, False, False), (True, False, False), (False, True, False), (True, True, False)]
VIEWS_8 = VIEWS_4 + [(a, b, True) for a, b, _ in VIEWS_4]


def heads(engine: Engine, imgs: np.ndarray) -> list[np.ndarray]:
    """``[np_prob (N, H, W), hv (N, 2, H, W), tp (N, C, H, W)]`` float32 of uint8 RGB tiles."""
    h, _ = engine.heads(imgs)
    h = h.numpy()
    return [np.asarray(h.np_prob), np.asarray(h.hv), np.asarray(h.tp_prob)]


def averaged_heads(engine: Engine, imgs: np.ndarray, views) -> list[np.ndarray]:
    """Heads averaged over views, each mapped back to the input's frame.

    A left-right flip negates the horizontal HV channel, an up-down flip the
    vertical one, and a transpose swaps the two channels.
    """
    acc = None
    for flip_x, flip_y, transpose in views:
        x = imgs.transpose(0, 2, 1, 3) if transpose else imgs
        x = x[:, :, ::-1] if flip_x else x
        x = x[:, ::-1] if flip_y else x
        p, hv, tp = heads(engine, np.ascontiguousarray(x))
        if flip_y:
            p, hv, tp = p[:, ::-1], hv[..., ::-1, :].copy(), tp[..., ::-1, :]
            hv[:, 1] *= -1
        if flip_x:
            p, hv, tp = p[:, :, ::-1], hv[..., ::-1].copy(), tp[..., ::-1]
            hv[:, 0] *= -1
        if transpose:
            p, hv, tp = p.transpose(0, 2, 1), hv.transpose(0, 1, 3, 2)[:, ::-1], tp.swapaxes(2, 3)
        cur = [np.ascontiguousarray(a, dtype=np.float32) for a in (p, hv, tp)]
        acc = cur if acc is None else [a + c for a, c in zip(acc, cur, strict=True)]
    return [a / len(views) for a in acc]


def main() -> None:
    """Parses the command line, scores each variant and prints the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--data", required=True, help="CoNSeP tiles folder (labels.npz, images/)")
    ap.add_argument("--limit", type=int, default=0, help="first N validation tiles only (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    bundle = load_bundle(args.bundle)
    ds = load_dataset(args.data)
    idx = _val_indices(ds.sources, bundle)
    if args.limit:
        idx = idx[: args.limit]
    engine = Engine.load(args.bundle, backend="torch")
    cfg = bundle.postprocess
    scores: dict[str, list] = {}
    for s in range(0, len(idx), 8):
        sel = idx[s : s + 8]
        imgs = ds.images[sel]
        variants = {
            "as is": heads(engine, imgs),
            "4 flips": averaged_heads(engine, imgs, VIEWS_4),
            "8 flips + transposes": averaged_heads(engine, imgs, VIEWS_8),
        }
        for name, (p, hv, tp) in variants.items():
            for k, i in enumerate(sel):
                truth = ds.inst[i]
                inst = instances_from_hv(p[k], hv[k], cfg)
                scores.setdefault(name, []).append(pq_stats(truth, inst))
                fused = np.ascontiguousarray(0.5 * (p[k] + 1 - tp[k, 0]))
                inst = instances_from_hv(fused, hv[k], cfg)
                scores.setdefault(name + ", fg fused", []).append(pq_stats(truth, inst))
    print(f"{len(idx)} validation tiles of {args.bundle}")
    for name, v in scores.items():
        pq, dq, sq = (np.mean([getattr(x, a) for x in v]) for a in ("pq", "dq", "sq"))
        print(f"{name:32s} PQ {pq:.4f}  DQ {dq:.4f}  SQ {sq:.4f}")


if __name__ == "__main__":
    main()
