"""Bench stage ``metrics``: native ``conic_scores`` vs its NumPy reference twin.

Inputs are CoNiC-like (N, 256, 256, 2) maps: 2x2 mosaics of real CoNSeP label
tiles downsampled 2x to CoNiC's 20x scale (~100 nuclei per tile, CoNSeP classes
mapped to the 6 CoNiC classes), with predictions made by perturbing them the way
a segmentation model errs (eroded/dilated outlines, shifts, missed, merged and
split nuclei, false positives, wrong and mixed classes, shuffled ids). Without
the CoNSeP folder, synthetic overlapping discs stand in.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hvx import _native
from hvx.bench import harness
from hvx.metrics import conic_scores, conic_scores_ref

NAME = "metrics"
HELP = "CoNiC PQ/mPQ+ (C++, 1 thread and all threads) vs the NumPy reference"

_SIZE = 256
# CoNSeP class -> CoNiC class: 1 misc -> connective, 3 epithelial -> 2, 4 spindle -> 6;
# 2 inflammatory -> neutrophil/lymphocyte/plasma/eosinophil with these odds.
_INFLAMMATORY = (np.array([1, 3, 4, 5]), np.array([0.05, 0.7, 0.15, 0.1]))


def consep_dir() -> Path | None:
    """The CoNSeP label folder: ``$HVX_CONSEP_DIR`` or ``../shared/data/consep``."""
    env = os.environ.get("HVX_CONSEP_DIR")
    candidates = [Path(env)] if env else []
    repo = Path(__file__).resolve().parents[2]
    candidates += [p / "shared" / "data" / "consep" for p in (repo.parent, repo.parent.parent)]
    for c in candidates:
        if (c / "labels.npz").exists():
            return c
    return None


def _shift3(a: np.ndarray, op) -> np.ndarray:
    """3x3 neighbourhood min or max (edge-replicated) of a 2-D array."""
    p = np.pad(a, 1, mode="edge")
    h, w = a.shape
    out = p[1 : h + 1, 1 : w + 1].copy()
    for dy in range(3):
        for dx in range(3):
            op(out, p[dy : dy + h, dx : dx + w], out=out)
    return out


def _conic_classes(inst: np.ndarray, cls: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Maps a CoNSeP class map (one class per instance) to CoNiC classes per instance."""
    top = int(inst.max())
    per_id = np.zeros(top + 1, np.int64)
    per_id[inst.ravel()] = cls.ravel()
    mapped = np.select(
        [per_id == 1, per_id == 3, per_id == 4, per_id == 2],
        [6, 2, 6, rng.choice(_INFLAMMATORY[0], size=top + 1, p=_INFLAMMATORY[1])],
        0,
    )
    mapped[0] = 0
    return mapped[inst]


def _true_tiles_consep(n: int, rng: np.random.Generator, folder: Path) -> np.ndarray:
    labels = np.load(folder / "labels.npz")
    inst = labels["inst"][:, ::2, ::2]
    cls = labels["cls"][:, ::2, ::2]
    counts = np.array([np.count_nonzero(np.bincount(t.ravel())[1:]) for t in inst])
    out = np.zeros((n, _SIZE, _SIZE, 2), np.int32)
    half = _SIZE // 2
    for k in range(n):
        while True:  # four tiles with ~100 nuclei in all, like a CoNiC patch
            pick = rng.choice(len(inst), size=4, replace=False)
            if 80 <= counts[pick].sum() <= 120:
                break
        offset = 0
        for j, src in enumerate(pick):
            y, x = (j // 2) * half, (j % 2) * half
            t = inst[src].astype(np.int32)
            out[k, y : y + half, x : x + half, 0] = np.where(t > 0, t + offset, 0)
            out[k, y : y + half, x : x + half, 1] = _conic_classes(t, cls[src], rng)
            offset += int(t.max())
    return out


def _true_tiles_synthetic(n: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[-7:8, -7:8]
    out = np.zeros((n, _SIZE + 14, _SIZE + 14, 2), np.int32)
    for k in range(n):
        for i in range(1, 101):  # later discs occlude earlier ones (fragments)
            cy, cx = rng.integers(0, _SIZE, 2)
            disc = yy**2 + xx**2 <= rng.uniform(3, 7) ** 2
            win = out[k, cy : cy + 15, cx : cx + 15]
            win[disc] = (i, rng.integers(1, 7))
    return np.ascontiguousarray(out[:, 7:-7, 7:-7])


def _perturb(true: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible prediction for one (H, W, 2) true map."""
    lab, tcls = true[..., 0], true[..., 1]
    top = int(lab.max())
    ids = np.arange(top + 1)
    r = rng.random(top + 1)
    erode, dilate, drop = (r >= 0.05) & (r < 0.2), (r >= 0.2) & (r < 0.35), r < 0.05
    lo, hi = _shift3(lab, np.minimum), _shift3(lab, np.maximum)
    pred = lab.copy()
    pred[erode[lab] & (lo != hi)] = 0
    grow = (lab == 0) & dilate[hi]
    pred[grow] = hi[grow]
    pred[drop[pred]] = 0
    present = np.unique(pred)[1:]
    nxt = top + 1
    parent = []  # source id of each new id from top + 1 on (0: a false positive)
    for a in rng.choice(present, size=min(len(present), 3), replace=False):  # merges
        near = hi[(pred == a) & (hi != a) & (hi > 0)]
        if near.size:
            pred[pred == a] = near[0]
    for a in rng.choice(present, size=min(len(present), 3), replace=False):  # splits
        ys, xs = np.nonzero(pred == a)
        if xs.size > 8:
            right = xs > xs.mean()
            pred[ys[right], xs[right]] = nxt
            parent.append(a)
            nxt += 1
    yy, xx = np.mgrid[: lab.shape[0], : lab.shape[1]]
    for _ in range(rng.integers(2, 6)):  # false positives
        cy, cx = rng.integers(0, lab.shape[0]), rng.integers(0, lab.shape[1])
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(2, 5) ** 2) & (pred == 0)
        pred[disc] = nxt
        parent.append(0)
        nxt += 1
    if rng.random() < 0.5:  # a registration error of one pixel
        pred = np.roll(pred, tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
    # Classes: the true class of the id it came from, 15% wrong, 3% of nuclei mixed.
    src_cls = np.zeros(nxt, np.int64)
    src_cls[ids] = np.bincount(lab.ravel(), weights=tcls.ravel(), minlength=top + 1)[ids] / (
        np.maximum(np.bincount(lab.ravel(), minlength=top + 1), 1)
    )
    src_cls = np.rint(src_cls).astype(np.int64)
    parent = np.array(parent, np.int64)
    src_cls[top + 1 :] = np.where(parent > 0, src_cls[parent], rng.integers(1, 7, parent.size))
    wrong = rng.random(nxt) < 0.15
    src_cls[wrong] = rng.integers(1, 7, int(wrong.sum()))
    pcls = np.where(pred > 0, src_cls[pred], 0)
    mixed = rng.random(nxt) < 0.03
    half = mixed[pred] & (xx % 2 == 0) & (pred > 0)
    pcls[half] = (pcls[half] % 6) + 1
    # Shuffled, non-contiguous ids.
    new_ids = np.concatenate([[0], rng.choice(np.arange(1, 20 * nxt), size=nxt - 1, replace=False)])
    return np.stack([new_ids[pred], pcls], axis=-1).astype(np.int32)


def make_conic_pairs(
    n: int, seed: int = 0, folder: Path | None = None, *, synthetic: bool = False
) -> tuple[np.ndarray, np.ndarray, str]:
    """Builds ``n`` (true, pred) CoNiC-like map pairs.

    Args:
        n: Number of 256x256 tiles.
        seed: RNG seed.
        folder: CoNSeP label folder; None looks it up (:func:`consep_dir`).
        synthetic: Use overlapping random discs even when CoNSeP is present.

    Returns:
        ``(true, pred, source)``: two ``ndarray[n, 256, 256, 2] int32`` and
        "consep" or "synthetic".
    """
    rng = np.random.default_rng(seed)
    folder = None if synthetic else (folder or consep_dir())
    if folder is not None:
        true, source = _true_tiles_consep(n, rng, folder), "consep"
    else:
        true, source = _true_tiles_synthetic(n, rng), "synthetic"
    pred = np.stack([_perturb(t, rng) for t in true])
    return true, pred, source


def agreement(native, reference) -> dict:
    """How far native ``conic_scores`` is from the twin on the same maps (both ConicScores).

    Returns:
        ``{"tp_fp_fn_identical", "max_abs_sum_iou_diff", "pq_native", "pq_reference",
        "mpq_plus_native", "mpq_plus_reference"}``: counts must be identical; the
        summed IoUs may differ by float rounding only.
    """
    return {
        "tp_fp_fn_identical": bool(np.array_equal(native.stats[:, :3], reference.stats[:, :3])),
        "max_abs_sum_iou_diff": float(np.max(np.abs(native.stats[:, 3] - reference.stats[:, 3]))),
        "pq_native": float(native.pq),
        "pq_reference": float(reference.pq),
        "mpq_plus_native": float(native.mpq_plus),
        "mpq_plus_reference": float(reference.mpq_plus),
    }


def run(ctx: harness.BenchContext) -> list[harness.Record]:
    """Times native ``conic_scores`` (1 thread, all threads) vs ``conic_scores_ref``."""
    records = []
    default_threads = _native.max_threads()
    for batch in ctx.batches:
        true, pred, source = make_conic_pairs(batch, seed=batch)
        ref_repeats = 1 if ctx.quick else max(1, min(ctx.repeats, 3))
        got: dict = {}
        ref = harness.time_call(
            lambda t=true, p=pred, g=got: g.update(ref=conic_scores_ref(t, p)),
            warmup=0,
            repeats=ref_repeats,
        )
        nuclei = float(np.mean([np.unique(t[..., 0]).size - 1 for t in true]))
        extra = {
            "inputs": source,
            "nuclei_per_tile": nuclei,
            "agreement": agreement(conic_scores(true, pred), got["ref"]),
        }
        records.append(harness.Record(NAME, "reference", batch, ctx.size, ref, extra=dict(extra)))
        for threads in sorted({1, default_threads}):
            _native.set_num_threads(threads)
            try:
                nat = harness.time_call(
                    lambda t=true, p=pred: conic_scores(t, p),
                    warmup=ctx.warmup,
                    repeats=ctx.repeats,
                )
            finally:
                _native.set_num_threads(default_threads)
            records.append(
                harness.Record(
                    NAME,
                    f"native-{threads}t",
                    batch,
                    ctx.size,
                    nat,
                    baseline="reference",
                    speedup=ref.median_ms / nat.median_ms,
                    extra={**extra, "threads": threads},
                )
            )
    return records
