"""hvx.postprocess: the C++ path against the reference twin (SPEC §3), pixel for pixel."""

from __future__ import annotations

import contextlib

import cv2
import numpy as np
import pytest
from _pp_corpus import consep_corpus, nuclei_scene, smooth_fields, synthetic_corpus
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from hvx import _native
from hvx._postprocess_ref import (
    conic_pipeline_ref,
    instance_table_ref,
    instances_from_hv_ref,
    outer_contour_ref,
    remove_small_objects_ref,
)
from hvx.postprocess import PostprocessConfig, instance_table, instances_from_hv, postprocess
from hvx.results import BatchResult


def assert_table_equal(rows, tab):
    assert len(rows) == len(tab)
    for k, row in enumerate(rows):
        assert row.id == tab.id[k]
        assert row.type == tab.type[k]
        assert np.float32(row.type_prob) == tab.type_prob[k]
        assert row.centroid == tuple(tab.centroid[k])
        assert row.bbox == tuple(tab.bbox[k])
        assert row.area == tab.area[k]
        np.testing.assert_array_equal(row.contour, tab.contours[k])


def check_case(np_prob, hv, types, config=None):
    config = config or PostprocessConfig()
    ref = instances_from_hv_ref(np_prob, hv, config)
    got = instances_from_hv(np_prob, hv, config)
    assert got.dtype == np.int32 and got.shape == np_prob.shape
    mismatch = int((ref != got).sum())
    assert mismatch == 0, f"{mismatch} of {ref.size} pixels differ"
    assert_table_equal(instance_table_ref(got, types), instance_table(got, types))


# ---- single steps, bit for bit -------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (7, 300), (33, 64), (64, 33)])
def test_normalize_matches_cv2(shape):
    rng = np.random.default_rng(0)
    x32 = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    x64 = rng.standard_normal(shape) * 1e4
    for x in (x32, x64, np.full(shape, 0.25, np.float32)):
        ref = cv2.normalize(x, None, 0, 1, cv2.NORM_MINMAX, cv2.CV_32F)
        np.testing.assert_array_equal(_native._pp_normalize(x), ref)


@pytest.mark.parametrize("ksize", [3, 5, 21, 31])
@pytest.mark.parametrize(
    "shape",
    # widths of exactly 64 / 128 and one past: the AVX-512 row pass works in
    # 64-column steps (K = 21) and hands the rest to the unaligned kernel
    [
        *[(1, 1), (2, 3), (7, 300), (300, 7), (45, 61), (64, 9), (95, 40), (200, 70)],
        *[(33, 64), (20, 128), (9, 65), (3, 129)],
    ],
)
def test_sobel_matches_cv2_bitwise(ksize, shape):
    rng = np.random.default_rng(ksize)
    x = cv2.normalize(
        rng.standard_normal(shape).astype(np.float32) ** 3, None, 0, 1, cv2.NORM_MINMAX, cv2.CV_32F
    )
    for dx in (0, 1):
        ref = cv2.Sobel(x, cv2.CV_64F, dx, 1 - dx, ksize=ksize)
        np.testing.assert_array_equal(_native._pp_sobel(x, dx, ksize), ref)


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (5, 1), (40, 37)])
def test_gaussian_matches_cv2_bitwise(shape):
    rng = np.random.default_rng(1)
    x = rng.random(shape) * (rng.random(shape) > 0.3)
    np.testing.assert_array_equal(_native._pp_gaussian3(x), cv2.GaussianBlur(x, (3, 3), 0))


@pytest.mark.parametrize("seed", range(4))
def test_binary_steps_match_scipy_and_cv2(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 70, 2))
    m = (rng.random((h, w)) > 0.5).astype(np.uint8)
    np.testing.assert_array_equal(_native._pp_label4(m), ndi.label(m)[0])
    m = (rng.random((h, w)) > 0.3).astype(np.uint8)
    np.testing.assert_array_equal(_native._pp_fill_holes(m), ndi.binary_fill_holes(m))
    m = (cv2.GaussianBlur(rng.random((h, w)), (0, 0), 1.5) > 0.5).astype(np.uint8)
    for k in (3, 5, 7):
        se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        np.testing.assert_array_equal(
            _native._pp_open_ellipse(m, k), cv2.morphologyEx(m, cv2.MORPH_OPEN, se)
        )


@pytest.mark.parametrize("shape", [(1, 64), (3, 65), (40, 128), (9, 129), (70, 200), (130, 7)])
def test_binary_steps_on_bit_rows_match_across_word_edges(shape):
    """The bit-packed morphology at widths around and past 64-bit words, large
    ellipses (half-width > 64) and mask bytes other than 0 / 1."""
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    m = (cv2.GaussianBlur(rng.random(shape), (0, 0), 2.0) > 0.5).astype(np.uint8)
    m *= rng.integers(1, 256, shape, dtype=np.uint8)  # any nonzero byte is "on"
    on = (m != 0).astype(np.uint8)
    np.testing.assert_array_equal(_native._pp_label4(m), ndi.label(on)[0])
    np.testing.assert_array_equal(_native._pp_fill_holes(m), ndi.binary_fill_holes(on))
    holes = np.ones(shape, np.uint8)
    holes[1:-1:3, 1:-1:4] = 0  # many one-pixel holes
    np.testing.assert_array_equal(_native._pp_fill_holes(holes), ndi.binary_fill_holes(holes))
    for k in (1, 3, 5, 9, 31, 133):
        se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        np.testing.assert_array_equal(
            _native._pp_open_ellipse(m, k), cv2.morphologyEx(on, cv2.MORPH_OPEN, se)
        )


def test_opening_keeps_objects_at_the_image_edge():
    m = np.zeros((8, 8), np.uint8)
    m[:3, :] = 1  # a 3-row band on the top edge survives (the edge does not erode)
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    ref = cv2.morphologyEx(m, cv2.MORPH_OPEN, se)
    assert ref[0].all()
    np.testing.assert_array_equal(_native._pp_open_ellipse(m, 5), ref)


def test_remove_small_objects_keeps_exactly_min_size():
    lab = np.zeros((5, 12), np.int32)
    lab[0, :10] = 1  # exactly 10 px: kept
    lab[2, :9] = 2  # 9 px: removed
    out = remove_small_objects_ref(lab, 10)
    assert (out == 1).sum() == 10 and (out == 2).sum() == 0


@pytest.mark.parametrize("exact_heap", [False, True])
@pytest.mark.parametrize("levels", [3, 0])
def test_watershed_matches_skimage_with_ties_and_plateaus(exact_heap, levels):
    rng = np.random.default_rng(7 + levels)
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        img = rng.random((h, w))
        if levels:
            img = np.round(img * levels) / levels  # many exact ties
        mask = (rng.random((h, w)) > 0.2).astype(np.uint8)
        markers = np.zeros((h, w), np.int32)
        idx = rng.choice(h * w, size=min(h * w, 6), replace=False)
        markers.flat[idx] = np.arange(1, len(idx) + 1)
        markers *= mask
        ref = watershed(img, markers=markers, mask=mask.astype(bool))
        got = _native._pp_watershed(img, markers, mask, exact_heap=exact_heap)
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("seed", range(6))
def test_watershed_matches_skimage_with_blob_markers_and_ties(seed):
    """Markers of many pixels (seeds of one label tied in value), several labels
    tied with each other, and a mask of several components."""
    rng = np.random.default_rng(100 + seed)
    h, w = (int(v) for v in rng.integers(20, 70, 2))
    img = np.round(cv2.GaussianBlur(rng.random((h, w)), (0, 0), 2.0) * 6) / 6
    mask = (cv2.GaussianBlur(rng.random((h, w)), (0, 0), 3.0) > 0.47).astype(np.uint8)
    markers = ndi.label((img <= np.quantile(img, 0.2)) & (mask > 0))[0].astype(np.int32)
    if seed % 2:  # plus single-pixel markers sharing values with the blobs
        idx = rng.choice(h * w, size=8, replace=False)
        markers.flat[idx] = markers.max() + np.arange(1, 9)
        markers *= mask
    ref = watershed(img, markers=markers, mask=mask.astype(bool))
    for exact in (False, True):
        np.testing.assert_array_equal(_native._pp_watershed(img, markers, mask, exact), ref)


@pytest.mark.parametrize("seed", range(6))
def test_watershed_matches_skimage_with_blob_markers_distinct_values(seed):
    """Continuous relief (every value distinct: the flood without rank lists),
    blob markers of several labels, a mask of several components."""
    rng = np.random.default_rng(300 + seed)
    h, w = (int(v) for v in rng.integers(20, 90, 2))
    img = cv2.GaussianBlur(rng.random((h, w)), (0, 0), 1.0 + seed)
    mask = (cv2.GaussianBlur(rng.random((h, w)), (0, 0), 3.0) > 0.45).astype(np.uint8)
    markers = ndi.label((img <= np.quantile(img, 0.15)) & (mask > 0))[0].astype(np.int32)
    assert len(np.unique(img[mask > 0])) == int((mask > 0).sum())
    ref = watershed(img, markers=markers, mask=mask.astype(bool))
    for exact in (False, True):
        np.testing.assert_array_equal(_native._pp_watershed(img, markers, mask, exact), ref)


@pytest.mark.parametrize("seed", range(4))
def test_pipeline_matches_reference_with_quantised_maps(seed):
    """Coarsely quantised head outputs: many exact ties in the relief (seeds of
    one value, same and different labels, in one or several components)."""
    rng = np.random.default_rng(200 + seed)
    np_prob, hv, types = nuclei_scene(rng, 96, 112, 40, 0.1)
    q = (2, 4, 8, 16)[seed]
    check_case(np.round(np_prob * 2) / 2, np.round(hv * q) / q, types)


def test_watershed_plateau_two_markers():
    img = np.zeros((5, 9))
    markers = np.zeros((5, 9), np.int32)
    markers[2, 0], markers[2, 8] = 1, 2
    mask = np.ones((5, 9), np.uint8)
    ref = watershed(img, markers=markers, mask=mask.astype(bool))
    for exact in (False, True):
        np.testing.assert_array_equal(_native._pp_watershed(img, markers, mask, exact), ref)


@pytest.fixture(params=[0, 1, 2], ids=["plain", "avx2", "avx512"])
def isa(request):
    """Runs a test with the SIMD kernels capped at one level (skips levels the CPU lacks)."""
    prev = _native._pp_set_isa_limit(request.param)
    try:
        if _native._pp_isa_level() != request.param:
            pytest.skip(f"this CPU has no SIMD level {request.param}")
        yield request.param
    finally:
        _native._pp_set_isa_limit(prev)


def test_every_simd_path_gives_the_same_bits(isa):
    """Sobel (all kernels), min-max normalisation and the whole pipeline on each path."""
    rng = np.random.default_rng(11)
    for shape in [(1, 1), (5, 3), (70, 33), (130, 257)]:
        x = cv2.normalize(
            rng.standard_normal(shape).astype(np.float32) ** 3,
            None,
            0,
            1,
            cv2.NORM_MINMAX,
            cv2.CV_32F,
        )
        for ksize in (3, 21):
            for dx in (0, 1):
                ref = cv2.Sobel(x, cv2.CV_64F, dx, 1 - dx, ksize=ksize)
                np.testing.assert_array_equal(_native._pp_sobel(x, dx, ksize), ref)
        ref = cv2.normalize(x * 7 - 2, None, 0, 1, cv2.NORM_MINMAX, cv2.CV_32F)
        np.testing.assert_array_equal(_native._pp_normalize(x * 7 - 2), ref)
    for case in synthetic_corpus(n_smooth=2, n_scenes=3, seed=9):
        check_case(*case[1:])


def _extremes_off_the_foreground(rng, h, w):
    """Nuclei in one corner; the HV maps' strongest edges far off the foreground.

    The Sobel maps' min / max (which normalise the energy) then come from pixels
    the energy never reads: a fast path that computed the Sobel on the
    foreground only would change the markers.
    """
    np_prob, hv, _ = nuclei_scene(rng, h, w, count=6, noise=0.05)
    keep = np.zeros((h, w), bool)
    keep[: h // 3, : w // 3] = True
    np_prob = np.where(keep, np_prob, np_prob * 0.2).astype(np.float32)
    y, x = rng.integers(h // 2, h - 2), rng.integers(w // 2, w - 2)
    step = rng.uniform(1.5, 4.0)
    hv[0, y - 3 : y + 3, x:] += step  # vertical edge in the horizontal map
    hv[1, y:, x - 3 : x + 3] -= step  # horizontal edge in the vertical map
    return np_prob, hv.astype(np.float32)


def test_sobel_extremes_off_the_foreground_match_reference(isa):
    rng = np.random.default_rng(21)
    for h, w in [(96, 96), (130, 257), (256, 256)]:
        for _ in range(3):
            np_prob, hv = _extremes_off_the_foreground(rng, h, w)
            np.testing.assert_array_equal(
                instances_from_hv(np_prob, hv), instances_from_hv_ref(np_prob, hv)
            )


# ---- the whole pipeline ----------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    synthetic_corpus(n_smooth=6, n_scenes=10, seed=5),
    ids=lambda c: c[0] if isinstance(c, tuple) else None,
)
def test_pipeline_matches_reference_fast(case):
    _, np_prob, hv, types = case
    check_case(np_prob, hv, types)


@pytest.mark.slow
def test_pipeline_matches_reference_full_corpus(request):
    """>= 200 tiles (+ 40 real CoNSeP-derived tiles when the data is present)."""
    cases = synthetic_corpus()
    with contextlib.suppress(pytest.skip.Exception):
        cases += consep_corpus(request.getfixturevalue("consep_dir"))
    assert len(cases) >= 200
    total = mismatched = 0
    for name, np_prob, hv, types in cases:
        ref = instances_from_hv_ref(np_prob, hv)
        got = instances_from_hv(np_prob, hv)
        total += ref.size
        mismatched += int((ref != got).sum())
        assert_table_equal(instance_table_ref(got, types), instance_table(got, types)), name
    assert mismatched == 0, f"{mismatched} / {total} pixels differ"


def test_consep_tiles_match_reference(consep_dir):
    for _, np_prob, hv, types in consep_corpus(consep_dir, n=4, seed=3):
        check_case(np_prob, hv, types)


def test_non_default_config_matches_reference():
    rng = np.random.default_rng(11)
    np_prob, hv, types = nuclei_scene(rng, 80, 72, 20, 0.1)
    for cfg in (
        PostprocessConfig(
            np_threshold=0.3,
            min_object_size=4,
            sobel_ksize=11,
            marker_threshold=0.55,
            opening_ksize=3,
        ),
        PostprocessConfig(opening_ksize=1, min_object_size=0),
        PostprocessConfig(opening_ksize=7, sobel_ksize=3),
    ):
        check_case(np_prob, hv, types, cfg)


# ---- instance table ----------------------------------------------------------


def test_table_ties_lines_and_background_vote():
    inst = np.zeros((12, 16), np.int32)
    types = np.zeros((12, 16), np.int32)
    inst[1:5, 1:5] = 1
    types[1:3, 1:5] = 3
    types[3:5, 1:5] = 2  # 8 px type 3, 8 px type 2: tie -> smaller id (2)
    inst[6:10, 1:5] = 2
    types[6:7, 1:5] = 4  # 12 px background, 4 px type 4 -> type 4, prob 4/16
    inst[1:4, 8:12] = 5  # only background -> type 0
    inst[6, 8:15] = 7  # 1-px line: 2 contour points -> not in the table
    inst[9, 9] = 9  # single pixel -> not in the table
    tab = instance_table(inst, types)
    assert tab.id.tolist() == [1, 2, 5]
    assert tab.type.tolist() == [2, 4, 0]
    np.testing.assert_allclose(tab.type_prob, [0.5, 0.25, 1.0], rtol=1e-6)
    assert tab.bbox[0].tolist() == [1, 1, 5, 5] and tab.area.tolist() == [16, 16, 12]
    np.testing.assert_allclose(tab.centroid[0], [2.5, 2.5])
    assert_table_equal(instance_table_ref(inst, types), tab)
    res = postprocess(
        np.zeros((1, 12, 16), np.float32),
        np.zeros((1, 2, 12, 16), np.float32),
        np.zeros((1, 12, 16), np.int32),
    )
    assert len(res.tables[0]) == 0


def test_table_from_probabilities_equals_table_from_argmax():
    rng = np.random.default_rng(2)
    inst = ndi.label(rng.random((40, 40)) > 0.4)[0].astype(np.int32)
    probs = rng.random((5, 40, 40)).astype(np.float32)
    a = instance_table(inst, probs)
    b = instance_table(inst, np.argmax(probs, axis=0))
    assert a.id.tolist() == b.id.tolist() and a.type.tolist() == b.type.tolist()


def test_contour_of_disconnected_and_holed_instances():
    inst = np.zeros((14, 14), np.int32)
    inst[1:8, 1:8] = 3
    inst[3:5, 3:5] = 0  # a hole
    inst[9:12, 2:9] = 3  # a second component of the same id (user maps may have them)
    inst[0, 12] = 3  # and a third, first in raster order
    inst[6:9, 9:13] = 4
    crop = (inst == 3)[0:12, 1:13].astype(np.uint8)
    tab = instance_table(inst, np.ones_like(inst))
    # the first component in raster order is the lone pixel (1 point): id 3 is skipped
    assert outer_contour_ref(crop).shape[0] == 1 and 3 not in tab.id
    inst[0, 12] = 0
    tab = instance_table(inst, np.ones_like(inst))
    assert_table_equal(instance_table_ref(inst, np.ones_like(inst)), tab)
    assert tab.contours[0][0].tolist() == [1, 1]


@pytest.mark.parametrize("seed", range(3))
def test_table_matches_reference_on_random_label_maps(seed):
    rng = np.random.default_rng(seed)
    inst = ndi.label(cv2.GaussianBlur(rng.random((50, 60)), (0, 0), 1.2) > 0.5)[0]
    inst = (inst * 3).astype(np.int32)  # gaps in the ids
    types = rng.integers(0, 4, inst.shape).astype(np.int32)
    assert_table_equal(instance_table_ref(inst, types), instance_table(inst, types))


# ---- batch and CoNiC ----------------------------------------------------------


def test_batch_equals_single_images_and_threads_agree():
    rng = np.random.default_rng(3)
    cases = [nuclei_scene(rng, 64, 64, 16, 0.1) for _ in range(4)]
    np_prob = np.stack([c[0] for c in cases])
    hv = np.stack([c[1] for c in cases])
    labels = np.stack([c[2] for c in cases])
    r1 = postprocess(np_prob, hv, labels, num_threads=1)
    r2 = postprocess(np_prob, hv, labels, num_threads=2)
    assert isinstance(r1, BatchResult) and len(r1) == 4
    np.testing.assert_array_equal(r1.inst, r2.inst)
    np.testing.assert_array_equal(r1.type, r2.type)
    for i in range(4):
        np.testing.assert_array_equal(r1.inst[i], instances_from_hv_ref(np_prob[i], hv[i]))
        assert_table_equal(instance_table_ref(r1.inst[i], labels[i]), r1.tables[i])
        lut = dict(zip(r1.tables[i].id.tolist(), r1.tables[i].type.tolist(), strict=True))
        want = np.vectorize(lambda v, lut=lut: lut.get(v, 0))(r1.inst[i])
        np.testing.assert_array_equal(r1.type[i], want)
    probs = np.eye(5, dtype=np.float32)[labels].transpose(0, 3, 1, 2)
    r3 = postprocess(np_prob, hv, probs)
    np.testing.assert_array_equal(r3.type, r1.type)


def test_conic_pipeline_matches_reference():
    rng = np.random.default_rng(4)
    cases = [nuclei_scene(rng, 48, 40, 8, 0.1) for _ in range(2)]
    np_prob = np.stack([c[0] for c in cases])
    hv = np.stack([c[1] for c in cases])
    labels = np.stack([c[2] for c in cases])
    res = postprocess(np_prob, hv, labels, PostprocessConfig(conic=True))
    assert res.inst.shape == (2, 48, 40)
    for i in range(2):
        inst, cls = conic_pipeline_ref(np_prob[i], hv[i], labels[i])
        np.testing.assert_array_equal(res.inst[i], inst)
        np.testing.assert_array_equal(res.type[i], cls)
    assert res.to_conic().shape == (2, 48, 40, 2)


# ---- config and bad input -------------------------------------------------------


def test_config_roundtrip_and_unknown_keys():
    cfg = PostprocessConfig(marker_threshold=0.45, conic=True)
    assert PostprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert PostprocessConfig().to_dict()["sobel_ksize"] == 21
    with pytest.raises(ValueError, match=r"unknown key 'bogus'; expected one of np_threshold"):
        PostprocessConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="sobel_ksize: expected an odd int"):
        PostprocessConfig(sobel_ksize=20)
    with pytest.raises(ValueError, match="gaussian_ksize: expected 3, got 5"):
        PostprocessConfig(gaussian_ksize=5)


def _good(n=1, h=8, w=9):
    return (
        np.zeros((n, h, w), np.float32),
        np.zeros((n, 2, h, w), np.float32),
        np.zeros((n, h, w), np.int32),
    )


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda a, h, t: (a[0], h, t), r"np_prob: expected shape \(N, H, W\), got \(8, 9\)"),
        (lambda a, h, t: (a, h[:, :1], t), r"hv: expected shape .* got \(1, 1, 8, 9\)"),
        (
            lambda a, h, t: (a, np.concatenate([h, h[:, :1]], 1), t),
            r"hv: expected shape .* got \(1, 3, 8, 9\)",
        ),
        (lambda a, h, t: (a.astype(np.int32), h, t), "np_prob: expected a float dtype, got int32"),
        (lambda a, h, t: (np.full_like(a, np.nan), h, t), "np_prob: expected finite values"),
        (lambda a, h, t: (a, np.full_like(h, np.inf), t), "hv: expected finite values"),
        (lambda a, h, t: (a[:0], h[:0], t[:0]), r"np_prob: expected a non-empty array"),
        (lambda a, h, t: (a, h, t[:, :4]), r"type map: expected labels .* got \(1, 4, 9\)"),
        (lambda a, h, t: (a, h, t.astype(np.float32)), "type labels: expected an integer dtype"),
        (lambda a, h, t: (a, h, t - 1), r"type labels: expected ids in \[0, 255\]"),
        (
            lambda a, h, t: (a, h, np.full((1, 3, 8, 9), np.nan, np.float32)),
            "type probabilities: expected finite values, got NaN or inf",
        ),
    ],
)
def test_postprocess_bad_input(mutate, match):
    with pytest.raises(ValueError, match=match):
        postprocess(*mutate(*_good()))


def test_single_image_bad_input():
    with pytest.raises(ValueError, match=r"hv: expected shape \(2, H, W\) = \(2, 4, 4\)"):
        instances_from_hv(np.zeros((4, 4), np.float32), np.zeros((3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"np_prob: expected a non-empty array"):
        instances_from_hv(np.zeros((0, 4), np.float32), np.zeros((2, 0, 4), np.float32))
    with pytest.raises(ValueError, match=r"inst: expected ids in \[0, 2\*\*31 - 1\]"):
        instance_table(np.full((3, 3), -1), np.zeros((3, 3), np.int32))
    with pytest.raises(ValueError, match="num_threads: expected an int >= 1"):
        postprocess(*_good(), num_threads=0)
    with pytest.raises(ValueError, match="config: expected a PostprocessConfig"):
        instances_from_hv(np.zeros((4, 4), np.float32), np.zeros((2, 4, 4), np.float32), {})


@pytest.mark.parametrize("fg", [0.0, 0.9])  # without foreground too (no Sobel then)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_single_image_nonfinite_rejected(fg, bad):
    """One bad value anywhere, in either map, is caught by the native passes."""
    a, h = np.full((33, 40), fg, np.float32), np.zeros((2, 33, 40), np.float32)
    for where in [(0, 0), (32, 39), (17, 5)]:
        a_bad = a.copy()
        a_bad[where] = bad
        with pytest.raises(ValueError, match="np_prob: expected finite values, got NaN or inf"):
            instances_from_hv(a_bad, h)
        for ch in (0, 1):
            h_bad = h.copy()
            h_bad[(ch, *where)] = bad
            with pytest.raises(ValueError, match="hv: expected finite values, got NaN or inf"):
                instances_from_hv(a, h_bad)
            with pytest.raises(ValueError, match="hv: expected finite values"):
                postprocess(a[None], h_bad[None], np.zeros((1, 33, 40), np.int32))


def test_native_rejects_bad_params_and_shapes():
    a, h = np.zeros((4, 4), np.float32), np.zeros((2, 4, 4), np.float32)
    kw = dict(
        np_threshold=0.5,
        min_object_size=10,
        sobel_ksize=21,
        marker_threshold=0.4,
        opening_ksize=5,
        gaussian_ksize=3,
    )
    with pytest.raises(ValueError, match="sobel_ksize: expected an odd integer in"):
        _native.pp_instances_from_hv(a, h, **{**kw, "sobel_ksize": 4})
    with pytest.raises(ValueError, match=r"hv: expected shape \(2, 4, 4\), got \(2, 4, 5\)"):
        _native.pp_instances_from_hv(a, np.zeros((2, 4, 5), np.float32), **kw)


def test_smooth_fields_odd_shapes():
    rng = np.random.default_rng(8)
    for h, w in [(1, 1), (7, 300), (257, 255)]:
        check_case(*smooth_fields(rng, h, w))


def test_nonfinite_type_probabilities_rejected_on_both_pipelines():
    a, h, _ = _good(n=2)
    tp = np.full((2, 3, 8, 9), 0.25, np.float32)
    tp[1, 2, 3, 4] = np.inf
    for conic in (False, True):
        with pytest.raises(ValueError, match="type probabilities: expected finite values"):
            postprocess(a, h, tp, PostprocessConfig(conic=conic), num_threads=2)
