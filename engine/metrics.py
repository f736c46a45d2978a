"""CoNiC metrics: PQ, mPQ+ and R², identical to the official evaluation (SPEC §1).

The public functions validate their inputs and run the C++ kernels of
``hvx._native`` (one pass over the pixels per image, OpenMP across images, GIL
released). Each has a pure NumPy reference twin (``*_ref``) written from SPEC §1,
the structure of CoNIC's ``compute_stats.py`` / ``stats_utils.py``: remap the
labels, loop over true instances, bounding-box crops, IoU = inter / (total - inter).
The twins are the oracles of the tests and the baselines of the benchmarks.

Semantics, as in the official evaluation:

* A true and a predicted instance pair when their IoU is > 0.5 strictly (0.5
  exactly is no match); each then has at most one partner.
* ``dq = tp / (tp + fp/2 + fn/2 + 1e-6)``, ``sq = sum_iou / (tp + 1e-6)``,
  ``pq = dq * sq``; an empty pair of maps scores 0, a perfect match
  ``(tp / (tp + 1e-6))**2``.
* Binary PQ is computed per image and averaged over images. mPQ+ pools TP, FP, FN
  and the IoU sum of each class over all images first, then takes PQ+ per class
  and the mean over all ``num_classes`` classes (an absent class scores 0 and
  still counts).
* Classes are taken per pixel: an instance whose pixels carry several classes
  becomes a partial instance in each class.
* Counts: a nucleus counts for class v when it has a class-v pixel inside the
  central crop (the official ``len(unique(inst * (cls == v))[1:])``, which counts
  one fewer when the crop holds no pixel outside class-v nuclei).
* R²: sklearn's ``r2_score`` per class (a constant true column scores 1.0 when
  predicted exactly, else 0.0), then the mean.

Where the official code raises instead of returning a value (``remap_label`` on an
image without a background pixel), hvx treats every nonzero id as an instance.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hvx.features import require_native

__all__ = [
    "CONIC_CLASSES",
    "ConicScores",
    "PQStats",
    "conic_counts",
    "conic_counts_ref",
    "conic_scores",
    "conic_scores_ref",
    "pq_stats",
    "pq_stats_ref",
    "r2_scores",
    "r2_scores_ref",
]

#: CoNiC class names of class ids 1..6 (also the counts.csv columns, in order).
CONIC_CLASSES = ("neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective")

_EPS = 1.0e-6
_INT64_MAX = np.iinfo(np.int64).max


@dataclasses.dataclass(frozen=True)
class PQStats:
    """Panoptic quality of one pair of instance maps.

    Attributes:
        tp: Matched pairs (IoU > 0.5).
        fp: Predicted instances without a match.
        fn: True instances without a match.
        sum_iou: Sum of the IoUs of the matched pairs.
        dq: Detection quality ``tp / (tp + fp/2 + fn/2 + 1e-6)``.
        sq: Segmentation quality ``sum_iou / (tp + 1e-6)``.
        pq: ``dq * sq``.
    """

    tp: int
    fp: int
    fn: int
    sum_iou: float
    dq: float
    sq: float
    pq: float

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int, sum_iou: float) -> PQStats:
        """Builds the stats from the counts with the official formulas."""
        tp, fp, fn, sum_iou = int(tp), int(fp), int(fn), float(sum_iou)
        dq = tp / ((tp + 0.5 * fp + 0.5 * fn) + _EPS)
        sq = sum_iou / (tp + _EPS)
        return cls(tp, fp, fn, sum_iou, dq, sq, dq * sq)


@dataclasses.dataclass(frozen=True, eq=False)
class ConicScores:
    """CoNiC segmentation and classification scores of a set of images.

    Attributes:
        pq: Binary PQ per image (classes ignored), averaged over images.
        mpq_plus: Mean of ``pq_plus`` over all classes.
        pq_plus: ``ndarray[C] float64``, PQ+ of classes 1..C from pooled counts.
        stats: ``ndarray[C, 4] float64``, per class the dataset totals of TP, FP,
            FN and the sum of matched IoUs.
        pq_per_image: ``ndarray[N] float64``, the binary PQ of each image.
    """

    pq: float
    mpq_plus: float
    pq_plus: np.ndarray
    stats: np.ndarray
    pq_per_image: np.ndarray

    def to_dict(self, class_names: tuple[str, ...] | None = None) -> dict:
        """Returns a JSON-ready dict; per-class values keyed by ``class_names``."""
        names = class_names or _class_names(len(self.pq_plus))
        return {
            "pq": self.pq,
            "multi_pq+": self.mpq_plus,
            "pq_plus": {n: float(v) for n, v in zip(names, self.pq_plus, strict=True)},
            "stats": {
                n: dict(zip(("tp", "fp", "fn", "sum_iou"), map(float, row), strict=True))
                for n, row in zip(names, self.stats, strict=True)
            },
        }


def _class_names(num_classes: int) -> tuple[str, ...]:
    if num_classes == len(CONIC_CLASSES):
        return CONIC_CLASSES
    return tuple(f"class_{c}" for c in range(1, num_classes + 1))


# ----------------------------------------------------------------------------- validation


def _as_labels(a, name: str, fn: str) -> np.ndarray:
    """Returns ``a`` as an integer array; integer-valued floats become int64."""
    a = np.asarray(a)
    kind = a.dtype.kind
    if kind in "iu":
        if a.dtype == np.uint64:
            if a.size and int(a.max()) > _INT64_MAX:
                raise ValueError(f"{fn}: expected {name} values < 2**63, got {int(a.max())}")
            return a.astype(np.int64)
        return a
    if kind == "f":
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{fn}: expected finite integer values in {name}, got NaN or inf")
        frac = a != np.floor(a)
        if np.any(frac):
            raise ValueError(
                f"{fn}: expected integer values in {name}, got non-integer floats "
                f"(e.g. {a[frac].flat[0]!r})"
            )
        if a.size and (a.max() >= 2.0**63 or a.min() < -(2.0**63)):
            raise ValueError(f"{fn}: expected {name} values within int64, got {a.max()!r}")
        return a.astype(np.int64)
    raise ValueError(f"{fn}: expected an integer array for {name}, got dtype {a.dtype}")


def _pair(true, pred, fn: str, names: tuple[str, str], rank: int, shape_text: str):
    """Validates dtypes, rank and shapes; returns both arrays in one dtype."""
    t = _as_labels(true, names[0], fn)
    p = _as_labels(pred, names[1], fn)
    for a, n in ((t, names[0]), (p, names[1])):
        if a.ndim != rank or (rank == 4 and a.shape[3] != 2):
            raise ValueError(f"{fn}: expected {n} of shape {shape_text}, got {a.shape}")
    if t.shape != p.shape:
        raise ValueError(
            f"{fn}: expected {names[0]} and {names[1]} of the same shape, got {t.shape} and "
            f"{p.shape}"
        )
    if 0 in t.shape:
        raise ValueError(f"{fn}: expected non-empty arrays, got shape {t.shape}")
    if t.dtype != p.dtype:
        common = np.promote_types(t.dtype, p.dtype)
        t, p = t.astype(common), p.astype(common)
    return t, p


def _check_classes(num_classes: int, fn: str) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise ValueError(f"{fn}: expected an integer num_classes, got {num_classes!r}")
    if not 1 <= num_classes <= 255:
        raise ValueError(f"{fn}: expected num_classes in 1..255, got {num_classes}")
    return int(num_classes)


def _check_values(a: np.ndarray, num_classes: int | None, fn: str, name: str) -> None:
    """Range checks of the reference path (the native path checks in C++)."""
    inst = a if num_classes is None else a[..., 0]
    if inst.size and inst.min() < 0:
        raise ValueError(f"{fn}: expected instance ids >= 0, got {inst.min()} in {name}")
    if num_classes is not None:
        cls = a[..., 1]
        if cls.min() < 0 or cls.max() > num_classes:
            bad = cls.min() if cls.min() < 0 else cls.max()
            raise ValueError(f"{fn}: expected class ids in 0..{num_classes}, got {bad} in {name}")


def _threads(num_threads: int | None) -> int:
    if num_threads is None:
        return 0
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"expected num_threads >= 1 or None, got {num_threads!r}")
    return num_threads


def _crop(crop, height: int, width: int, fn: str) -> tuple[int, int]:
    pair = (crop, crop) if np.isscalar(crop) else tuple(np.asarray(crop).ravel().tolist())
    if len(pair) != 2:
        raise ValueError(f"{fn}: expected crop as an int or (h, w) ints, got {crop!r}")
    ch, cw = pair
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in (ch, cw)):
        raise ValueError(f"{fn}: expected crop as an int or (h, w) ints, got {crop!r}")
    if not (1 <= ch <= height and 1 <= cw <= width):
        raise ValueError(
            f"{fn}: expected 1 <= crop <= (H, W) = ({height}, {width}), got ({ch}, {cw})"
        )
    return int(ch), int(cw)


# ----------------------------------------------------------------------------- native path


def pq_stats(true_inst, pred_inst) -> PQStats:
    """Binary panoptic quality of one pair of instance maps.

    Args:
        true_inst: ``ndarray[H, W]`` of any integer dtype (or integer-valued
            floats), 0 = background; ids need not be contiguous.
        pred_inst: ``ndarray[H, W]``, same shape.

    Returns:
        The :class:`PQStats` of the pair.

    Raises:
        ValueError: On a wrong rank, mismatched shapes, negative ids, non-integer
            values or a non-numeric dtype.
    """
    fn = "pq_stats"
    t, p = _pair(true_inst, pred_inst, fn, ("true_inst", "pred_inst"), 2, "(H, W)")
    return PQStats.from_counts(*require_native().pq_counts(t, p))


def conic_scores(
    true, pred, num_classes: int = 6, *, num_threads: int | None = None
) -> ConicScores:
    """CoNiC PQ (binary, per-image mean) and mPQ+ (pooled per class) of a set of images.

    Args:
        true: ``ndarray[N, H, W, 2]`` integer; channel 0 instance ids (>= 0),
            channel 1 class ids in 0..num_classes (0 = background).
        pred: ``ndarray[N, H, W, 2]``, same layout and shape.
        num_classes: Number of classes C (6 for CoNiC).
        num_threads: Threads across images; None uses hvx._native's default.

    Returns:
        The :class:`ConicScores`.

    Raises:
        ValueError: On wrong ranks or shapes, negative ids, class ids outside
            0..num_classes, non-integer values or a non-numeric dtype.
    """
    fn = "conic_scores"
    num_classes = _check_classes(num_classes, fn)
    t, p = _pair(true, pred, fn, ("true", "pred"), 4, "(N, H, W, 2)")
    bc, bi, cc, ci = require_native().conic_stats(t, p, num_classes, _threads(num_threads))
    tp, fp, fn_ = (bc[:, j].astype(np.float64) for j in range(3))
    per_image = tp / ((tp + 0.5 * fp + 0.5 * fn_) + _EPS) * (bi / (tp + _EPS))
    info = np.concatenate([cc.astype(np.float64), ci[..., None]], axis=-1)  # (N, C, 4)
    stats = np.sum(info, axis=0)
    tp, fp, fn_, s = stats.T
    pq_plus = tp / ((tp + 0.5 * fp + 0.5 * fn_) + _EPS) * (s / (tp + _EPS))
    return ConicScores(
        pq=float(np.mean(per_image)),
        mpq_plus=float(np.mean(pq_plus)),
        pq_plus=pq_plus,
        stats=stats,
        pq_per_image=per_image,
    )


def conic_counts(
    maps, crop: int | tuple[int, int] = 224, num_classes: int = 6, *, num_threads=None
) -> np.ndarray:
    """Per-class nucleus counts in the central crop, as CoNiC's counts.csv.

    Args:
        maps: ``ndarray[N, H, W, 2]`` integer (instance ids, class ids).
        crop: Crop edge (or (h, w)); origin ``((H - h) // 2, (W - w) // 2)``.
        num_classes: Number of classes C.
        num_threads: Threads across images; None uses the default.

    Returns:
        ``ndarray[N, C] int64``, column c - 1 counts class c.

    Raises:
        ValueError: On a wrong shape, a crop outside 1..(H, W), negative ids or
            class ids outside 0..num_classes.
    """
    fn = "conic_counts"
    num_classes = _check_classes(num_classes, fn)
    m, _ = _pair(maps, maps, fn, ("maps", "maps"), 4, "(N, H, W, 2)")
    ch, cw = _crop(crop, m.shape[1], m.shape[2], fn)
    return require_native().conic_counts(m, ch, cw, num_classes, _threads(num_threads))


def _r2_inputs(true_counts, pred_counts, fn: str) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for a, name in ((true_counts, "true_counts"), (pred_counts, "pred_counts")):
        a = np.asarray(a)
        if a.dtype.kind not in "iuf":
            raise ValueError(f"{fn}: expected a numeric array for {name}, got dtype {a.dtype}")
        if a.ndim != 2:
            raise ValueError(f"{fn}: expected {name} of shape (N, C), got {a.shape}")
        a = a.astype(np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{fn}: expected finite values in {name}, got NaN or inf")
        out.append(a)
    t, p = out
    if t.shape != p.shape:
        raise ValueError(
            f"{fn}: expected true_counts and pred_counts of the same shape, got {t.shape} and "
            f"{p.shape}"
        )
    if t.shape[0] < 2 or t.shape[1] < 1:
        raise ValueError(f"{fn}: expected at least 2 rows and 1 column, got shape {t.shape}")
    return t, p


def r2_scores(true_counts, pred_counts) -> tuple[float, np.ndarray]:
    """R² per class (sklearn ``r2_score`` semantics) and their mean.

    Args:
        true_counts: ``ndarray[N, C]`` numeric, N >= 2 (rows matched by position).
        pred_counts: ``ndarray[N, C]``.

    Returns:
        ``(mean, per_class)``, per_class ``ndarray[C] float64``. A constant true
        column scores 1.0 when predicted exactly, else 0.0.

    Raises:
        ValueError: On mismatched shapes, a rank other than 2, fewer than 2 rows
            (sklearn returns NaN there), NaN/inf or a non-numeric dtype.
    """
    t, p = _r2_inputs(true_counts, pred_counts, "r2_scores")
    num = np.sum((t - p) ** 2, axis=0)
    den = np.sum((t - np.mean(t, axis=0)) ** 2, axis=0)
    ok = (den != 0) & (num != 0)
    per_class = np.ones(t.shape[1])
    per_class[ok] = 1.0 - num[ok] / den[ok]
    per_class[(num != 0) & (den == 0)] = 0.0
    return float(np.mean(per_class)), per_class


# ----------------------------------------------------------------------------- reference twin


def _remap_label_ref(x: np.ndarray) -> np.ndarray:
    """CoNiC ``remap_label``: k-th smallest nonzero id -> k, int32; no ids: unchanged.

    The official code removes id 0 from the sorted ids and raises when the image has
    no background pixel; here every nonzero id is an instance either way.
    """
    ids, inverse = np.unique(x, return_inverse=True)
    if not np.any(ids != 0):
        return x
    ranks = inverse.reshape(x.shape) + (0 if ids[0] == 0 else 1)
    return ranks.astype(np.int32)


def _bbox_ref(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``[rmin, rmax + 1, cmin, cmax + 1]`` of a non-empty mask."""
    rows = np.flatnonzero(np.any(mask, axis=1))
    cols = np.flatnonzero(np.any(mask, axis=0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def _get_pq_ref(true: np.ndarray, pred: np.ndarray, remap: bool = True):
    """CoNiC ``get_pq`` at match_iou = 0.5: returns (tp, fp, fn, sum_iou)."""
    if remap:
        pred, true = _remap_label_ref(pred), _remap_label_ref(true)
    true, pred = true.astype(np.int32), pred.astype(np.int32)
    true_ids = [int(v) for v in np.unique(true) if v != 0]
    pred_ids = [int(v) for v in np.unique(pred) if v != 0]
    iou = np.zeros((len(true_ids) + 1, len(pred_ids) + 1), np.float64)
    for t in true_ids:
        t_mask = true == t
        r0, r1, c0, c1 = _bbox_ref(t_mask)
        t_crop = t_mask[r0:r1, c0:c1]
        for p in np.unique(pred[r0:r1, c0:c1][t_crop]):
            if p == 0:
                continue
            p_mask = pred == p
            q0, q1, d0, d1 = _bbox_ref(p_mask)
            r0u, r1u, c0u, c1u = min(r0, q0), max(r1, q1), min(c0, d0), max(c1, d1)
            t2 = t_mask[r0u:r1u, c0u:c1u].astype(np.int64)
            p2 = p_mask[r0u:r1u, c0u:c1u].astype(np.int64)
            total = (t2 + p2).sum()
            inter = (t2 * p2).sum()
            iou[t - 1, p - 1] = inter / (total - inter)
    iou[iou <= 0.5] = 0.0  # pair iff IoU > 0.5 strictly; then each id has <= 1 partner
    paired_t, paired_p = np.nonzero(iou)
    paired_iou = iou[paired_t, paired_p]
    tp = len(paired_t)
    fp = len(set(pred_ids) - set((paired_p + 1).tolist()))
    fn = len(set(true_ids) - set((paired_t + 1).tolist()))
    return tp, fp, fn, float(paired_iou.sum())


def _multi_pq_info_ref(true: np.ndarray, pred: np.ndarray, num_classes: int) -> list:
    """CoNiC ``get_multi_pq_info``: per class [tp, fp, fn, sum_iou], per-pixel masking."""
    out = []
    for c in range(1, num_classes + 1):
        p_c = _remap_label_ref(pred[..., 0] * (pred[..., 1] == c))
        t_c = _remap_label_ref(true[..., 0] * (true[..., 1] == c))
        out.append(list(_get_pq_ref(t_c, p_c, remap=False)))
    return out


def pq_stats_ref(true_inst, pred_inst) -> PQStats:
    """Reference twin of :func:`pq_stats` (per-instance masks, bounding-box crops)."""
    fn = "pq_stats"
    t, p = _pair(true_inst, pred_inst, fn, ("true_inst", "pred_inst"), 2, "(H, W)")
    _check_values(t, None, fn, "true_inst")
    _check_values(p, None, fn, "pred_inst")
    return PQStats.from_counts(*_get_pq_ref(t, p))


def conic_scores_ref(true, pred, num_classes: int = 6) -> ConicScores:
    """Reference twin of :func:`conic_scores` (compute_stats.py ``seg_class``)."""
    fn = "conic_scores"
    num_classes = _check_classes(num_classes, fn)
    t, p = _pair(true, pred, fn, ("true", "pred"), 4, "(N, H, W, 2)")
    _check_values(t, num_classes, fn, "true")
    _check_values(p, num_classes, fn, "pred")
    pq_list, mpq_info_list = [], []
    for k in range(t.shape[0]):
        tp, fp, fn_, s = _get_pq_ref(t[k, ..., 0], p[k, ..., 0])
        pq_list.append(PQStats.from_counts(tp, fp, fn_, s).pq)
        mpq_info_list.append(_multi_pq_info_ref(t[k], p[k], num_classes))
    totals = np.sum(np.array(mpq_info_list, dtype=np.float64), axis=0)
    pq_plus = []
    for tp, fp, fn_, s in totals.tolist():
        dq = tp / ((tp + 0.5 * fp + 0.5 * fn_) + _EPS)
        pq_plus.append(dq * (s / (tp + _EPS)))
    return ConicScores(
        pq=float(np.mean(pq_list)),
        mpq_plus=float(np.mean(pq_plus)),
        pq_plus=np.array(pq_plus),
        stats=totals,
        pq_per_image=np.array(pq_list),
    )


def conic_counts_ref(maps, crop: int | tuple[int, int] = 224, num_classes: int = 6) -> np.ndarray:
    """Reference twin of :func:`conic_counts` (``cropping_center`` + ``unique(...)[1:]``)."""
    fn = "conic_counts"
    num_classes = _check_classes(num_classes, fn)
    m, _ = _pair(maps, maps, fn, ("maps", "maps"), 4, "(N, H, W, 2)")
    _check_values(m, num_classes, fn, "maps")
    ch, cw = _crop(crop, m.shape[1], m.shape[2], fn)
    h0, w0 = int((m.shape[1] - ch) * 0.5), int((m.shape[2] - cw) * 0.5)
    out = np.zeros((m.shape[0], num_classes), np.int64)
    for k in range(m.shape[0]):
        inst = m[k, h0 : h0 + ch, w0 : w0 + cw, 0]
        cls = m[k, h0 : h0 + ch, w0 : w0 + cw, 1]
        for v in range(1, num_classes + 1):
            out[k, v - 1] = len(np.unique(inst * (cls == v))[1:])
    return out


def r2_scores_ref(true_counts, pred_counts) -> tuple[float, np.ndarray]:
    """Reference twin of :func:`r2_scores`: sklearn ``r2_score`` column by column."""
    t, p = _r2_inputs(true_counts, pred_counts, "r2_scores")
    scores = []
    for j in range(t.shape[1]):
        y_true, y_pred = t[:, j].copy(), p[:, j].copy()
        numerator = float(((y_true - y_pred) ** 2).sum())
        denominator = float(((y_true - np.average(y_true)) ** 2).sum())
        if denominator != 0.0 and numerator != 0.0:
            scores.append(1.0 - numerator / denominator)
        elif numerator != 0.0:  # constant true column, not predicted exactly
            scores.append(0.0)
        else:
            scores.append(1.0)
    return float(np.mean(scores)), np.array(scores)
