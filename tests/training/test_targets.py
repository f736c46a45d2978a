"""np/hv/tp targets: hand-computed HV maps (SPEC §2) and the one departure (SPEC §7f)."""

import numpy as np
import pytest

from hvx.training.targets import (
    MIN_HV_SIZE,
    fix_mirror_padding,
    fix_mirror_padding_ref,
    gen_instance_hv_map,
    gen_instance_hv_map_ref,
    make_targets,
)

BOTH = pytest.mark.parametrize("hv_fn", [gen_instance_hv_map, gen_instance_hv_map_ref])


def _random_blobs(seed, shape=(64, 80), n=25):
    """Overlapping rectangles and discs with random ids (pieces, borders, tiny ones)."""
    rng = np.random.default_rng(seed)
    ann = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(n):
        cy, cx = rng.integers(-3, shape[0] + 3), rng.integers(-3, shape[1] + 3)
        r = rng.integers(1, 9)
        if rng.random() < 0.5:
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            m = (abs(yy - cy) <= r) & (abs(xx - cx) <= rng.integers(0, 9))
        ann[m] = rng.integers(1, 40)
    return ann


def _touches_top_left(fixed, inst_id):
    rows, cols = np.nonzero(fixed == inst_id)
    return rows.min() < 2 or cols.min() < 2


# --- the SPEC example and hand-computed maps -------------------------------------------


@BOTH
def test_spec_example_7x7_square(hv_fn):
    ann = np.zeros((256, 256), np.int32)
    ann[100:107, 150:157] = 1
    hv = hv_fn(ann)
    expected = np.array([-1, -0.5, 0, 0.25, 0.5, 0.75, 1], np.float32)
    assert hv.shape == (256, 256, 2) and hv.dtype == np.float32
    for r in range(100, 107):
        np.testing.assert_array_equal(hv[r, 150:157, 0], expected)  # x along each row
    for c in range(150, 157):
        np.testing.assert_array_equal(hv[100:107, c, 1], expected)  # y down each column
    hv[100:107, 150:157] = 0
    assert not hv.any()  # background stays 0


# width -> x values left to right (zero one pixel left of the rounded centre; sides scaled apart)
WIDTHS = {
    7: [-1, -0.5, 0, 0.25, 0.5, 0.75, 1],
    6: [-1, -0.5, 0, 1 / 3, 2 / 3, 1],
    5: [-1, 0, 1 / 3, 2 / 3, 1],
    4: [-1, 0, 0.5, 1],
    3: [0, 0.5, 1],
    2: [0, 1],
    1: [1],
}


@BOTH
@pytest.mark.parametrize("width", sorted(WIDTHS))
def test_odd_and_even_widths(hv_fn, width):
    ann = np.zeros((60, 40), np.int32)
    ann[10:40, 20 : 20 + width] = 3  # 30 rows: >= 30 px for every width
    hv = hv_fn(ann)
    expected = np.array(WIDTHS[width], np.float32)
    for r in range(10, 40):
        np.testing.assert_array_equal(hv[r, 20 : 20 + width, 0], expected)
    # and along y (transposed map), the same rule
    hv_t = hv_fn(np.ascontiguousarray(ann.T))
    np.testing.assert_array_equal(hv_t[20 : 20 + width, 15, 1], expected)


@BOTH
def test_rounding_of_the_centre_of_mass(hv_fn):
    ann = np.zeros((50, 50), np.int32)
    ann[10:30, 10] = 1  # two columns of 20 + 20 px: centre 10.5 -> rounds up to 11
    ann[10:30, 11] = 1
    ann[10:31, 30] = 2  # 21 + 20 px: centre 30 + 20/41 = 30.49 -> rounds down to 30
    ann[10:30, 31] = 2
    hv = hv_fn(ann)
    np.testing.assert_array_equal(hv[15, 10:12, 0], [0, 1])  # zero column = left one
    np.testing.assert_array_equal(hv[15, 30:32, 0], [0.5, 1])  # no negative side: 1/2, 2/2


@BOTH
def test_asymmetric_normalisation_of_a_triangle(hv_fn):
    ann = np.zeros((40, 40), np.int32)
    for k in range(10):  # right triangle: row 10 + k has columns 10 .. 10 + k
        ann[10 + k, 10 : 11 + k] = 1
    hv = hv_fn(ann)
    # 55 px; column sums 10, 9, ..., 1 -> cx = 10 + 165/55 = 13 -> rounded 13 -> zero at col 12
    x = np.arange(10, 20) - 12.0
    expected_x = np.where(x < 0, x / 2, x / 7).astype(np.float32)
    np.testing.assert_array_equal(hv[19, 10:20, 0], expected_x)
    # row sums 1..10 -> cy = 10 + 330/55 = 16 -> zero at row 15; rows 10..19 -> -5..4
    y = np.arange(10, 20) - 15.0
    expected_y = np.where(y < 0, y / 5, y / 4).astype(np.float32)
    np.testing.assert_array_equal(hv[10:20, 10, 1], expected_y)
    assert hv.min() == -1 and hv.max() == 1


# --- the 30-pixel rule ------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize(("size", "kept"), [(29, False), (30, True), (31, True)])
def test_thirty_pixel_rule(hv_fn, size, kept):
    block = np.zeros(100, np.int32)
    block[:size] = 1  # raster-filled 10x10 block: 29 = 2 rows + 9 px, 30 = 3 rows, ...
    ann = np.zeros((40, 40), np.int32)
    ann[10:20, 10:20] = block.reshape(10, 10)
    hv = hv_fn(ann)
    assert hv[ann == 1].any() == kept
    targets = make_targets(ann, (ann > 0).astype(np.uint8))
    assert targets["np"].sum() == size  # stays foreground either way


def test_thirty_pixel_rule_matches_skimage_below_026():
    morphology = pytest.importorskip("skimage.morphology")
    ann = _random_blobs(3, shape=(80, 80), n=40)
    fixed = fix_mirror_padding(ann)
    expected = np.unique(morphology.remove_small_objects(fixed, min_size=MIN_HV_SIZE))[1:]
    hv = gen_instance_hv_map(ann)
    with_hv = np.unique(fixed[(hv != 0).any(-1)])
    # an instance of >= 30 px always has at least one non-zero value
    np.testing.assert_array_equal(with_hv, expected)


@BOTH
def test_crop_shape_counts_pixels_inside_the_crop_only(hv_fn):
    ann = np.zeros((40, 40), np.int32)
    ann[0:8, 10:15] = 1  # 40 px, 3 rows x 5 = 15 inside the 30x30 centre crop (rows 5..34)
    ann[20:28, 10:15] = 2  # 40 px, all inside
    hv = hv_fn(ann, (30, 30))
    assert not hv[ann == 1].any()
    assert hv[ann == 2].any()
    # a kept instance gets values over its whole extent, also outside the crop
    ann2 = np.zeros((40, 40), np.int32)
    ann2[30:40, 20:26] = 1  # 60 px, 30 inside the crop (rows 30..34)
    np.testing.assert_array_equal(hv_fn(ann2, (30, 30)), hv_fn(ann2))


def test_crop_shape_errors():
    ann = np.zeros((10, 10), np.int32)
    with pytest.raises(ValueError, match="crop_shape: expected at most the map size"):
        gen_instance_hv_map(ann, (11, 10))
    with pytest.raises(ValueError, match="crop_shape: expected two positive ints"):
        gen_instance_hv_map(ann, (0, 10))


# --- where hvx departs: the top/left 2-pixel band ----------------------------------------


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("axis", [0, 1])
def test_top_left_border_instances_get_hv_in_hvx_only(offset, axis):
    ann = np.zeros((64, 64), np.int32)
    ann[20:27, 30:37] = 1  # interior twin
    ann[offset : offset + 7, 5:12] = 2  # touches the top band
    if axis == 1:
        ann = np.ascontiguousarray(ann.T)
    ref = gen_instance_hv_map_ref(ann)
    hv = gen_instance_hv_map(ann)
    assert not ref[ann == 2].any()  # the reference quirk: no HV at all
    # hvx: the values of the interior instance of the same shape
    np.testing.assert_array_equal(hv[ann == 2], hv[ann == 1])
    np.testing.assert_array_equal(hv[ann == 1], ref[ann == 1])


def test_full_height_instance_wraps_in_the_reference_only():
    ann = np.zeros((40, 40), np.int32)
    ann[:, 10:14] = 1  # spans every row
    ref = gen_instance_hv_map_ref(ann)
    hv = gen_instance_hv_map(ann)
    rows_written = np.flatnonzero(ref[:, 10:14].any(axis=(1, 2)))
    np.testing.assert_array_equal(rows_written, [38, 39])  # only the last two rows
    y = np.arange(40) + 1 - 20.0  # centre row 19.5 -> 20 (relative origin -2 cancels)
    expected = np.where(y < 0, y / 19, y / 20).astype(np.float32)
    np.testing.assert_array_equal(hv[:, 11, 1], expected)


def test_bottom_right_border_instances_agree():
    ann = np.zeros((40, 40), np.int32)
    ann[35:40, 34:40] = 1
    ann[38:40, 5:25] = 2
    ann[10:25, 38:40] = 3
    np.testing.assert_array_equal(gen_instance_hv_map(ann), gen_instance_hv_map_ref(ann))


@pytest.mark.parametrize("seed", range(6))
def test_hvx_equals_reference_except_on_top_left_instances(seed):
    ann = _random_blobs(seed)
    hv, ref = gen_instance_hv_map(ann), gen_instance_hv_map_ref(ann)
    fixed = fix_mirror_padding(ann)
    for inst_id in np.unique(fixed)[1:]:
        m = fixed == inst_id
        if _touches_top_left(fixed, inst_id):
            assert (hv[m] != 0).any() or m.sum() < MIN_HV_SIZE
        else:
            np.testing.assert_array_equal(hv[m], ref[m])
    assert not hv[fixed == 0].any() and not ref[fixed == 0].any()


def test_hvx_equals_reference_on_real_tiles(consep_dir):
    with np.load(consep_dir / "labels.npz") as labels:
        inst = labels["inst"]
    differing = 0
    for tile in inst[::36]:
        hv, ref = gen_instance_hv_map(tile), gen_instance_hv_map_ref(tile)
        fixed = fix_mirror_padding(tile)
        bad = np.unique(fixed[(hv != ref).any(-1)])
        assert all(_touches_top_left(fixed, i) for i in bad)
        differing += len(bad)
    assert differing > 0  # real tiles do have nuclei cut by the top/left edge


def test_hv_ignores_id_values():
    ann = _random_blobs(7)
    sparse = np.where(ann > 0, ann.astype(np.int64) * 1_000_003 + 17, 0)
    np.testing.assert_array_equal(gen_instance_hv_map(sparse), gen_instance_hv_map(ann))
    np.testing.assert_array_equal(
        gen_instance_hv_map(ann.astype(np.uint16)), gen_instance_hv_map(ann)
    )


@BOTH
@pytest.mark.parametrize("shape", [(0, 0), (1, 40), (40, 1), (5, 5)])
def test_degenerate_shapes(hv_fn, shape):
    ann = np.ones(shape, np.int32)
    hv = hv_fn(ann)
    assert hv.shape == (*shape, 2)
    assert not hv.any()  # 1-pixel-wide crops are skipped; 5x5 = 25 px < 30


# --- fix_mirror_padding -----------------------------------------------------------------


def test_fix_mirror_padding_hand_computed():
    ann = np.array(
        [
            [1, 0, 2, 0, 2],
            [0, 1, 0, 0, 0],
            [1, 0, 5, 5, 2],
            [0, 0, 0, 0, 0],
        ],
        np.int32,
    )
    # max 5. id 1: pieces (0,0), (1,1), (2,0) in raster order -> 1, 2+5=7, 3+5=8; max 8.
    # id 2: pieces (0,2), (0,4), (2,4) -> 2, 2+8=10, 3+8=11; id 5: one piece.
    expected = np.array(
        [
            [1, 0, 2, 0, 10],
            [0, 7, 0, 0, 0],
            [8, 0, 5, 5, 11],
            [0, 0, 0, 0, 0],
        ]
    )
    for fn in (fix_mirror_padding, fix_mirror_padding_ref):
        out = fn(ann)
        np.testing.assert_array_equal(out, expected)
        assert out.dtype == np.int64
    assert ann[0, 4] == 2  # input not modified


@pytest.mark.parametrize("seed", range(8))
def test_fix_mirror_padding_matches_reference(seed):
    ann = _random_blobs(seed, n=60)
    np.testing.assert_array_equal(fix_mirror_padding(ann), fix_mirror_padding_ref(ann))


def test_fix_mirror_padding_diagonal_pieces_get_their_own_hv():
    ann = np.zeros((40, 40), np.int32)
    ann[5:11, 5:11] = 1
    ann[11:17, 11:17] = 1  # touches the first square only at a corner
    hv = gen_instance_hv_map(ann)
    single = np.zeros_like(ann)
    single[11:17, 11:17] = 1
    # each 6x6 piece (36 px) is its own instance: same values as alone
    np.testing.assert_array_equal(hv[11:17, 11:17], gen_instance_hv_map(single)[11:17, 11:17])


# --- make_targets -----------------------------------------------------------------------


def test_make_targets_contract():
    ann = _random_blobs(1)
    cls = (ann % 4).astype(np.uint8)
    t = make_targets(ann, cls)
    assert set(t) == {"np", "hv", "tp"}
    assert t["np"].dtype == np.int64 and t["np"].shape == ann.shape
    np.testing.assert_array_equal(t["np"], ann > 0)
    assert t["tp"].dtype == np.int64
    np.testing.assert_array_equal(t["tp"], cls)
    assert t["hv"].dtype == np.float32 and t["hv"].shape == (2, *ann.shape)
    assert t["hv"].flags.c_contiguous
    hv = gen_instance_hv_map(ann)
    np.testing.assert_array_equal(t["hv"][0], hv[..., 0])  # channel 0 = horizontal
    np.testing.assert_array_equal(t["hv"][1], hv[..., 1])
    assert np.abs(t["hv"]).max() <= 1


def test_make_targets_errors():
    ann = np.zeros((8, 8), np.int32)
    with pytest.raises(TypeError, match="inst: expected an integer dtype, got float32"):
        make_targets(ann.astype(np.float32), ann)
    with pytest.raises(ValueError, match=r"cls: expected the shape of inst \(8, 8\), got \(8, 9\)"):
        make_targets(ann, np.zeros((8, 9), np.uint8))
    with pytest.raises(ValueError, match="inst: expected a 2-D"):
        make_targets(ann[None], ann[None])
    with pytest.raises(ValueError, match="expected non-negative labels, got minimum -1"):
        make_targets(ann - 1, ann)
    with pytest.raises(TypeError, match="expected a numpy ndarray, got list"):
        make_targets([[0]], ann)


def test_former_twin_names_still_work():
    """The ``_reference`` names (before the ``_ref`` convention) are the same functions."""
    from hvx.training import targets

    assert targets.gen_instance_hv_map_reference is gen_instance_hv_map_ref
    assert targets.fix_mirror_padding_reference is fix_mirror_padding_ref
    assert {"gen_instance_hv_map_reference", "fix_mirror_padding_reference"} <= set(targets.__all__)
