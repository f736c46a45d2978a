"""hvx.metrics: the C++ path against the NumPy reference twin and hand-computed values."""

import numpy as np
import pytest

from hvx import _native
from hvx.metrics import (
    ConicScores,
    PQStats,
    conic_counts,
    conic_counts_ref,
    conic_scores,
    conic_scores_ref,
    pq_stats,
    pq_stats_ref,
    r2_scores,
    r2_scores_ref,
)

EPS = 1e-6
PERFECT_1 = (1 / (1 + EPS)) ** 2


# ----------------------------------------------------------------------------- helpers


def random_inst(rng, h, w, k, max_r=5.0):
    """Overlapping discs (later ones occlude earlier ones: fragments), shuffled sparse ids."""
    inst = np.zeros((h, w), np.int64)
    yy, xx = np.mgrid[:h, :w]
    for i in range(1, k + 1):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.uniform(0.5, max_r)
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    ids = np.concatenate([[0], rng.choice(np.arange(1, 10**6), size=k, replace=False)])
    return ids[inst]


def perturb(rng, inst):
    """A prediction: shifted, some ids merged or dropped, a few new discs, relabelled."""
    pred = np.roll(inst, tuple(rng.integers(-1, 2, 2)), axis=(0, 1)).copy()
    ids = np.unique(pred)[1:]
    if ids.size > 2:
        a, b, c = rng.choice(ids, 3, replace=False)
        pred[pred == a] = b  # merge
        pred[pred == c] = 0  # drop
    extra = random_inst(rng, *inst.shape, 3, max_r=3)
    pred = np.where((pred == 0) & (extra > 0), extra + 2 * 10**6, pred)
    old = np.unique(pred)
    new = np.concatenate([[0], rng.permutation(np.arange(1, 50 * old.size))[: old.size - 1]])
    return new[np.searchsorted(old, pred)]


def classes_for(rng, inst, num_classes, mixed=0.1):
    """Per-instance classes; a fraction of pixels gets another class (multi-class nuclei)."""
    ids, inverse = np.unique(inst, return_inverse=True)
    per_id = rng.integers(1, num_classes + 1, ids.size)
    cls = per_id[inverse.reshape(inst.shape)]
    flip = rng.random(inst.shape) < mixed
    cls[flip] = rng.integers(0, num_classes + 1, int(flip.sum()))
    return cls


def random_pairs(rng, n, h, w, k, num_classes=6):
    true = np.zeros((n, h, w, 2), np.int64)
    pred = np.zeros((n, h, w, 2), np.int64)
    for i in range(n):
        t = random_inst(rng, h, w, k)
        p = perturb(rng, t)
        t_cls = classes_for(rng, t, num_classes)
        p_cls = np.where(p > 0, t_cls, 0)  # mostly the true classes, some pixels flipped
        flip = rng.random(p.shape) < 0.1
        p_cls[flip] = rng.integers(0, num_classes + 1, int(flip.sum()))
        true[i] = np.stack([t, t_cls], -1)
        pred[i] = np.stack([p, p_cls], -1)
    return true, pred


def assert_stats_equal(a, b):
    assert (a.tp, a.fp, a.fn) == (b.tp, b.fp, b.fn)
    assert abs(a.sum_iou - b.sum_iou) <= 1e-12
    for f in ("dq", "sq", "pq"):
        assert getattr(a, f) == pytest.approx(getattr(b, f), abs=1e-12)


def assert_scores_equal(a: ConicScores, b: ConicScores):
    np.testing.assert_array_equal(a.stats[:, :3], b.stats[:, :3])  # TP, FP, FN exactly
    np.testing.assert_allclose(a.stats[:, 3], b.stats[:, 3], rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.pq_per_image, b.pq_per_image, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.pq_plus, b.pq_plus, rtol=0, atol=1e-12)
    assert a.pq == pytest.approx(b.pq, abs=1e-12)
    assert a.mpq_plus == pytest.approx(b.mpq_plus, abs=1e-12)


def both_pq(t, p):
    a, b = pq_stats(t, p), pq_stats_ref(t, p)
    assert_stats_equal(a, b)
    return a


def maps(inst, cls):
    return np.stack([np.asarray(inst), np.asarray(cls)], -1)[None]


# ----------------------------------------------------------------------------- hand-made PQ


def test_perfect_match_scores_tp_over_tp_plus_eps_squared():
    t = np.zeros((6, 6), np.int32)
    t[1:3, 1:3], t[4:6, 3:6] = 7, 2
    s = both_pq(t, np.where(t == 7, 40, np.where(t == 2, 9, 0)))
    assert (s.tp, s.fp, s.fn, s.sum_iou) == (2, 0, 0, 2.0)
    assert s.pq == pytest.approx((2 / (2 + EPS)) ** 2, abs=1e-15)


def test_iou_exactly_half_is_not_a_match():
    t = np.array([[1, 1, 1, 0]])
    p = np.array([[0, 1, 1, 1]])  # inter 2, union 4
    s = both_pq(t, p)
    assert (s.tp, s.fp, s.fn, s.sum_iou, s.pq) == (0, 1, 1, 0.0, 0.0)


def test_iou_just_above_half_is_a_match():
    t = np.zeros((1, 1000), np.int32)
    t[0, :500] = 3
    p = np.zeros_like(t)
    p[0, 249:750] = 5  # inter 251, union 750 -> 0.3346: no
    assert both_pq(t, p).tp == 0
    p[:] = 0
    p[0, :251] = 5  # inter 251, union 500 -> 0.502
    s = both_pq(t, p)
    assert (s.tp, s.fp, s.fn) == (1, 0, 0)
    assert s.sum_iou == 251 / 500
    t2 = np.zeros((1, 2001), np.int32)
    t2[0, :2000] = 1
    p2 = np.zeros_like(t2)
    p2[0, :1001] = 1  # IoU = 1001/2000 = 0.5005
    assert both_pq(t2, p2).tp == 1
    p2[0, 1000] = 0  # IoU = 1000/2000 = 0.5 exactly
    assert both_pq(t2, p2).tp == 0


def test_hand_computed_two_instances():
    t = np.array([[1, 1, 0, 2, 2, 2], [1, 1, 0, 2, 2, 2]])
    p = np.array([[8, 8, 8, 0, 4, 4], [8, 0, 0, 0, 4, 4]])
    # 1 vs 8: inter 3, union 5 -> 0.6 match; 2 vs 4: inter 4, union 6 -> 0.667 match.
    s = both_pq(t, p)
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)
    assert s.sum_iou == pytest.approx(3 / 5 + 4 / 6, abs=1e-15)
    assert s.dq == pytest.approx(2 / (2 + EPS))
    assert s.pq == pytest.approx(2 / (2 + EPS) * (3 / 5 + 4 / 6) / (2 + EPS), abs=1e-15)


@pytest.mark.parametrize(
    ("t", "p", "expected"),
    [
        (np.zeros((5, 5)), np.zeros((5, 5)), (0, 0, 0)),
        (np.zeros((5, 5)), np.eye(5) * 3, (0, 1, 0)),
        (np.diag([1, 0, 2, 0, 0]), np.zeros((5, 5)), (0, 0, 2)),
    ],
)
def test_empty_gt_or_prediction_scores_zero(t, p, expected):
    s = both_pq(t.astype(np.int32), p.astype(np.int32))
    assert (s.tp, s.fp, s.fn) == expected
    assert (s.dq, s.sq, s.pq) == (0.0, 0.0, 0.0)


def test_one_pixel_images():
    zero = np.zeros((1, 1), np.int16)
    a, b = np.full((1, 1), 5, np.int16), np.full((1, 1), 9, np.int16)
    assert both_pq(zero, zero).pq == 0.0
    assert both_pq(a, b).pq == pytest.approx(PERFECT_1)  # no background pixel at all
    assert (both_pq(a, zero).fn, both_pq(zero, b).fp) == (1, 1)


def test_ids_need_not_be_contiguous_or_sorted():
    rng = np.random.default_rng(1)
    t = random_inst(rng, 40, 40, 12)
    ids = np.unique(t)
    new = [0, *rng.permutation(np.arange(10**9, 10**9 + 99))[: ids.size - 1]]
    perm = dict(zip(ids, new, strict=True))
    shuffled = np.vectorize(perm.get)(t)
    s = both_pq(t, shuffled)
    assert (s.fp, s.fn) == (0, 0)
    assert s.sum_iou == s.tp


def test_occlusion_fragments_are_one_instance():
    t = np.zeros((5, 9), np.int32)
    t[:, :3] = t[:, 6:] = 4  # one id, two fragments
    t[:, 3:6] = 2
    p = np.zeros_like(t)
    p[:, :3] = 1  # covers one fragment: IoU 15/30 = 0.5 -> no match
    p[:, 3:6] = 3
    s = both_pq(t, p)
    assert (s.tp, s.fp, s.fn) == (1, 1, 1)


@pytest.mark.parametrize(
    "dtype",
    [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.float32],
)
def test_integer_dtypes_agree(dtype):
    rng = np.random.default_rng(2)
    t = random_inst(rng, 32, 32, 10)
    p = perturb(rng, t)
    _, t = np.unique(t, return_inverse=True)  # ids 0..k to fit int8
    _, p = np.unique(p, return_inverse=True)
    t, p = t.reshape(32, 32), p.reshape(32, 32)
    expected = pq_stats(t.astype(np.int64), p.astype(np.int64))
    assert_stats_equal(pq_stats(t.astype(dtype), p.astype(dtype)), expected)
    assert_stats_equal(pq_stats_ref(t.astype(dtype), p.astype(dtype)), expected)
    assert_stats_equal(pq_stats(t.astype(dtype), p.astype(np.int32)), expected)  # mixed dtypes


def test_non_contiguous_inputs():
    rng = np.random.default_rng(3)
    t = random_inst(rng, 30, 50, 10)
    p = perturb(rng, t)
    assert_stats_equal(pq_stats(t.T, p.T), pq_stats_ref(t.T.copy(), p.T.copy()))
    assert_stats_equal(pq_stats(t[::2, ::3], p[::2, ::3]), pq_stats_ref(t[::2, ::3], p[::2, ::3]))


def test_huge_ids_and_many_instances_take_the_fallback_paths():
    t = np.repeat(np.arange(1, 2101, dtype=np.int64), 2)[None]  # 2100 two-pixel nuclei
    big = t * 10**12  # beyond any lookup table: sort-based relabelling
    s = pq_stats(t, big[:, ::-1])  # Kt * Kp > 2**22: hashed pairs
    assert (s.tp, s.fp, s.fn, s.sum_iou) == (2100, 0, 0, 2100.0)
    shifted = np.roll(big, 1, axis=1)  # every overlap is 1 of 3 pixels
    assert (pq_stats(t, shifted).tp, pq_stats(big, shifted).fn) == (0, 2100)


@pytest.mark.parametrize("seed", range(6))
def test_pq_random_native_equals_reference(seed):
    rng = np.random.default_rng(seed)
    t = random_inst(rng, 48, 56, 25)
    both_pq(t, perturb(rng, t))


def test_pairwise_sum_is_numpys():
    rng = np.random.default_rng(4)
    for n in [0, 1, 7, 8, 9, 100, 128, 129, 1000, 4099]:
        x = rng.random(n) * 10 ** rng.uniform(-3, 3)
        assert _native.pairwise_sum(x) == float(x.sum())


# ----------------------------------------------------------------------------- CoNiC scores


def test_multi_class_instance_splits_into_partial_instances():
    inst = np.zeros((4, 4), np.int32)
    inst[:2, :3] = 1
    t_cls = np.zeros_like(inst)
    t_cls[0, :3], t_cls[1, :3] = 1, 2  # one nucleus, 3 pixels of class 1, 3 of class 2
    p_cls = np.where(inst > 0, 1, 0)  # predicted all class 1
    true, pred = maps(inst, t_cls), maps(inst * 5, p_cls)
    a = conic_scores(true, pred)
    assert_scores_equal(a, conic_scores_ref(true, pred))
    assert a.pq == pytest.approx(PERFECT_1)  # binary: a perfect match
    # class 1: partial true (3 px) vs pred (6 px): IoU 0.5 -> FP + FN; class 2: FN only
    np.testing.assert_array_equal(a.stats[0], [0, 1, 1, 0])
    np.testing.assert_array_equal(a.stats[1], [0, 0, 1, 0])
    assert a.mpq_plus == 0.0


def test_absent_classes_score_zero_and_count_in_the_mean():
    inst = np.zeros((8, 8), np.int32)
    inst[1:4, 1:4], inst[5:8, 5:8] = 1, 2
    cls = np.where(inst > 0, 2, 0)
    a = conic_scores(maps(inst, cls), maps(inst, cls))
    assert_scores_equal(a, conic_scores_ref(maps(inst, cls), maps(inst, cls)))
    expected = (2 / (2 + EPS)) ** 2
    np.testing.assert_allclose(a.pq_plus, [0, expected, 0, 0, 0, 0], atol=1e-15)
    assert a.mpq_plus == pytest.approx(expected / 6, abs=1e-15)
    assert a.stats.shape == (6, 4)
    assert conic_scores(maps(inst, cls), maps(inst, cls), num_classes=2).mpq_plus == pytest.approx(
        expected / 2
    )


def test_pq_plus_pools_over_images_and_pq_averages_images():
    inst = np.zeros((6, 6), np.int32)
    inst[1:5, 1:5] = 1
    cls = np.where(inst > 0, 1, 0)
    empty = np.zeros_like(inst)
    true = np.concatenate([maps(inst, cls), maps(inst, cls), maps(empty, empty)])
    pred = np.concatenate([maps(inst, cls), maps(empty, empty), maps(empty, empty)])
    a = conic_scores(true, pred)
    assert_scores_equal(a, conic_scores_ref(true, pred))
    np.testing.assert_allclose(a.pq_per_image, [PERFECT_1, 0, 0])
    assert a.pq == pytest.approx(PERFECT_1 / 3)
    # class 1 pooled: TP 1, FN 1 -> dq = 1 / 1.5, sq = 1
    assert a.pq_plus[0] == pytest.approx(1 / (1.5 + EPS) / (1 + EPS))


@pytest.mark.parametrize("seed", range(3))
def test_conic_random_native_equals_reference(seed):
    rng = np.random.default_rng(10 + seed)
    true, pred = random_pairs(rng, 3, 40, 48, 20)
    assert_scores_equal(conic_scores(true, pred), conic_scores_ref(true, pred))
    np.testing.assert_array_equal(conic_counts(true, 24), conic_counts_ref(true, 24))


def test_conic_dtypes_and_threads_agree():
    rng = np.random.default_rng(20)
    true, pred = random_pairs(rng, 5, 24, 24, 10)
    _, t = np.unique(true[..., 0], return_inverse=True)
    _, p = np.unique(pred[..., 0], return_inverse=True)
    true[..., 0], pred[..., 0] = t.reshape(true.shape[:3]), p.reshape(pred.shape[:3])
    expected = conic_scores_ref(true, pred)
    for dtype in (np.int16, np.uint16, np.int32, np.int64):
        assert_scores_equal(conic_scores(true.astype(dtype), pred.astype(dtype)), expected)
    for threads in (1, 2, 5):
        got = conic_scores(true, pred, num_threads=threads)
        np.testing.assert_array_equal(got.stats, expected.stats)


def test_real_consep_labels_native_equals_reference(consep_dir):
    from hvx.bench.metrics import make_conic_pairs

    true, pred, source = make_conic_pairs(3, seed=5, folder=consep_dir)
    assert source == "consep"
    assert_scores_equal(conic_scores(true, pred), conic_scores_ref(true, pred))
    np.testing.assert_array_equal(conic_counts(true), conic_counts_ref(true))
    labels = np.load(consep_dir / "labels.npz")
    raw = np.stack([labels["inst"][:4], labels["cls"][:4]], -1)  # 40x tiles, 4 classes
    shifted = np.roll(raw, 2, axis=2)
    a = conic_scores(raw, shifted, num_classes=4)
    assert_scores_equal(a, conic_scores_ref(raw, shifted, num_classes=4))


# ----------------------------------------------------------------------------- counts


def test_counts_in_central_crop():
    inst = np.zeros((10, 10), np.int32)
    cls = np.zeros_like(inst)
    inst[0:2, 0:2], cls[0:2, 0:2] = 1, 1  # outside the central 6x6 (rows/cols 2..7)
    inst[1:4, 1:4], cls[1:4, 1:4] = 2, 1  # touches the crop
    inst[5:7, 5:7], cls[5:7, 5:7] = 3, 3
    cls[5, 5] = 1  # nucleus 3 also counts for class 1
    m = maps(inst, cls)
    np.testing.assert_array_equal(conic_counts(m, 6), [[2, 0, 1, 0, 0, 0]])
    np.testing.assert_array_equal(conic_counts_ref(m, 6), [[2, 0, 1, 0, 0, 0]])
    np.testing.assert_array_equal(conic_counts(m, (10, 2)), conic_counts_ref(m, (10, 2)))


def test_counts_reproduce_the_official_unique_quirk():
    m = maps(np.full((4, 4), 7), np.full((4, 4), 2))  # crop fully covered by one class-2 nucleus
    assert conic_counts(m, 2)[0, 1] == 0 == conic_counts_ref(m, 2)[0, 1]
    inst = np.array([[1, 2], [3, 3]])
    m2 = maps(inst, np.full((2, 2), 4))
    assert conic_counts(m2, 2)[0, 3] == 2 == conic_counts_ref(m2, 2)[0, 3]


# ----------------------------------------------------------------------------- R²


def test_r2_hand_values():
    t = np.array([[1, 5], [2, 5], [3, 5]])
    mean, per = r2_scores(t, np.array([[1, 5], [2, 5], [4, 5]]))
    np.testing.assert_allclose(per, [1 - 1 / 2, 1.0])  # constant column predicted exactly
    assert mean == pytest.approx(0.75)
    _, per = r2_scores(t, np.array([[1, 5], [2, 5], [3, 6]]))
    np.testing.assert_array_equal(per, [1.0, 0.0])  # constant column, not exact -> 0


def test_r2_random_equals_reference():
    rng = np.random.default_rng(7)
    t = rng.integers(0, 30, (50, 6))
    p = t + rng.normal(0, 3, (50, 6))
    t[:, 4] = 0
    mean, per = r2_scores(t, p)
    ref_mean, ref_per = r2_scores_ref(t, p)
    np.testing.assert_allclose(per, ref_per, rtol=0, atol=1e-12)
    assert mean == pytest.approx(ref_mean, abs=1e-12)
    assert per[4] == 0.0


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", [pq_stats, pq_stats_ref])
@pytest.mark.parametrize(
    ("t", "p", "match"),
    [
        (np.zeros((3, 4)), np.zeros((4, 4)), r"same shape, got \(3, 4\) and \(4, 4\)"),
        (np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), r"expected true_inst of shape \(H, W\)"),
        (np.zeros((0, 4)), np.zeros((0, 4)), r"expected non-empty arrays, got shape \(0, 4\)"),
        (np.full((2, 2), -1), np.zeros((2, 2)), r"expected instance ids >= 0, got -1 in true_inst"),
        (np.zeros((2, 2)), np.full((2, 2), 1.5), r"integer values in pred_inst, got non-integer"),
        (np.zeros((2, 2)), np.full((2, 2), np.nan), r"finite integer values in pred_inst"),
        (np.zeros((2, 2), bool), np.zeros((2, 2)), r"integer array for true_inst, got dtype bool"),
        (np.full((2, 2), 2**63, np.uint64), np.zeros((2, 2)), r"values < 2\*\*63"),
    ],
)
def test_pq_bad_input(fn, t, p, match):
    with pytest.raises(ValueError, match=match):
        fn(t, p)


def test_float_with_integer_values_is_accepted():
    t = np.array([[0.0, 3.0], [3.0, 0.0]])
    assert pq_stats(t, t).tp == 1


@pytest.mark.parametrize("fn", [conic_scores, conic_scores_ref])
def test_conic_bad_input(fn):
    good = np.zeros((2, 4, 4, 2), np.int32)
    with pytest.raises(ValueError, match=r"expected true of shape \(N, H, W, 2\), got \(4, 4, 2\)"):
        fn(good[0], good[0])
    with pytest.raises(ValueError, match=r"pred of shape \(N, H, W, 2\), got \(2, 4, 4, 3\)"):
        fn(good, np.zeros((2, 4, 4, 3), np.int32))
    with pytest.raises(ValueError, match=r"same shape, got \(2, 4, 4, 2\) and \(1, 4, 4, 2\)"):
        fn(good, good[:1])
    bad = good.copy()
    bad[1, 0, 0, 1] = 7
    with pytest.raises(ValueError, match=r"expected class ids in 0\.\.6, got 7 in true"):
        fn(bad, good)
    bad[1, 0, 0, 1] = -1
    with pytest.raises(ValueError, match=r"expected class ids in 0\.\.6, got -1 in pred"):
        fn(good, bad)
    bad = good.copy()
    bad[0, 1, 1, 0] = -4
    with pytest.raises(ValueError, match=r"expected instance ids >= 0, got -4 in pred"):
        fn(good, bad)
    with pytest.raises(ValueError, match=r"expected num_classes in 1\.\.255, got 0"):
        fn(good, good, num_classes=0)
    with pytest.raises(ValueError, match=r"expected non-empty arrays"):
        fn(good[:0], good[:0])


def test_native_names_the_lowest_bad_image():
    good = np.zeros((8, 4, 4, 2), np.int32)
    bad = good.copy()
    bad[5, 0, 0, 1] = bad[3, 0, 0, 1] = 9
    for threads in (1, 2):
        with pytest.raises(ValueError, match=r"got 9 in pred\[3\]"):
            conic_scores(good, bad, num_threads=threads)


@pytest.mark.parametrize("fn", [conic_counts, conic_counts_ref])
def test_counts_bad_input(fn):
    m = np.zeros((1, 8, 8, 2), np.int32)
    with pytest.raises(ValueError, match=r"1 <= crop <= \(H, W\) = \(8, 8\), got \(9, 9\)"):
        fn(m, 9)
    with pytest.raises(ValueError, match=r"expected crop as an int or \(h, w\) ints"):
        fn(m, (2, 2, 2))
    m[0, 0, 0, 1] = 7
    with pytest.raises(ValueError, match=r"expected class ids in 0\.\.6, got 7 in maps"):
        fn(m, 4)


@pytest.mark.parametrize("fn", [r2_scores, r2_scores_ref])
def test_r2_bad_input(fn):
    with pytest.raises(ValueError, match=r"same shape, got \(3, 6\) and \(3, 5\)"):
        fn(np.zeros((3, 6)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"at least 2 rows and 1 column, got shape \(1, 6\)"):
        fn(np.zeros((1, 6)), np.zeros((1, 6)))
    with pytest.raises(ValueError, match=r"expected true_counts of shape \(N, C\), got \(4,\)"):
        fn(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match=r"finite values in pred_counts"):
        fn(np.zeros((2, 2)), np.array([[0, np.inf], [0, 0]]))


def test_num_threads_is_validated():
    with pytest.raises(ValueError, match=r"expected num_threads >= 1 or None, got 0"):
        m = np.zeros((1, 2, 2, 2), np.int32)
        conic_scores(m, m, num_threads=0)


def test_pq_stats_from_counts_formulas():
    s = PQStats.from_counts(3, 1, 2, 2.25)
    assert s.dq == 3 / (3 + 0.5 + 1 + EPS)
    assert s.sq == 2.25 / (3 + EPS)
    assert s.pq == s.dq * s.sq
