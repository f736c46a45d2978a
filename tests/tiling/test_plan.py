import itertools

import numpy as np
import pytest

from hvx.tiling.plan import axis_cores, axis_starts, plan_tiles


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "expected"),
    [
        (100, 256, 64, [0]),
        (256, 256, 64, [0]),
        (257, 256, 64, [0, 1]),
        (448, 256, 64, [0, 192]),
        (449, 256, 64, [0, 192, 193]),
        (1000, 256, 0, [0, 256, 512, 744]),
        (640, 256, 128, [0, 128, 256, 384]),
    ],
)
def test_axis_starts(length, tile, overlap, expected):
    assert axis_starts(length, tile, overlap) == expected


@pytest.mark.parametrize("length", [1, 17, 255, 256, 300, 449, 1000, 4097])
@pytest.mark.parametrize(("tile", "overlap"), [(256, 64), (256, 128), (64, 0), (128, 32)])
def test_tiles_cover_and_cores_partition(length, tile, overlap):
    starts = axis_starts(length, tile, overlap)
    bounds = axis_cores(length, tile, starts)
    assert starts[0] == 0 and bounds[0] == 0 and bounds[-1] == length
    if length >= tile:
        assert starts[-1] + tile == length  # last tile ends at the edge
    for a, b in itertools.pairwise(starts):
        assert b - a <= tile - overlap and a + tile - b >= overlap  # at least `overlap`
    for i, s in enumerate(starts):
        lo, hi = bounds[i], bounds[i + 1]
        assert s <= lo < hi <= s + tile
        if i > 0:  # interior sides keep half the overlap away from the border
            assert lo - s >= overlap // 2
        if i < len(starts) - 1:
            assert s + tile - hi >= overlap // 2


def test_owner_matches_cores_and_iteration_order():
    plan = plan_tiles(700, 1000, 256, 64)
    assert len(plan) == plan.n_rows * plan.n_cols == len(list(plan))
    seen = np.full((700, 1000), -1)
    for t in plan:
        y0, x0, y1, x1 = t.core
        assert (seen[y0:y1, x0:x1] == -1).all()
        seen[y0:y1, x0:x1] = t.index
        assert plan.owner(y0, x0) == t.index and plan.owner(y1 - 0.01, x1 - 0.01) == t.index
    assert (seen >= 0).all()
    assert [t.index for t in plan] == list(range(len(plan)))


def test_tiles_touching_and_regions():
    plan = plan_tiles(1000, 1000, 256, 64, rows_per_region=2)
    assert plan.n_regions == -(-plan.n_rows // 2)
    assert [plan.region_of_row(r) for r in range(4)] == [0, 0, 1, 1]
    hit = plan.tiles_touching(200, 200, 210, 210)
    assert sorted(hit) == [0, 1, plan.n_cols, plan.n_cols + 1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"height": 0, "width": 5}, "at least 1 x 1"),
        ({"height": 5, "width": 5, "tile": 8}, "tile >= 16"),
        ({"height": 5, "width": 5, "tile": 256, "overlap": 130}, "even overlap in"),
        ({"height": 5, "width": 5, "overlap": 63}, "even overlap in"),
        ({"height": 5, "width": 5, "rows_per_region": 0}, "rows_per_region >= 1"),
    ],
)
def test_plan_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_tiles(**kwargs)


def test_plan_rejects_float_sizes():
    with pytest.raises(TypeError, match="expected an int height"):
        plan_tiles(10.5, 10)
    with pytest.raises(IndexError, match="expected a tile index"):
        plan_tiles(10, 10).tile_at(1)


@pytest.mark.parametrize("length", [1, 255, 256, 300, 449, 1000, 4096, 4097])
@pytest.mark.parametrize(
    ("tile", "overlap", "align"), [(256, 64, 32), (256, 64, 64), (128, 32, 16)]
)
def test_aligned_starts_cover_and_partition(length, tile, overlap, align):
    starts = axis_starts(length, tile, overlap, align)
    bounds = axis_cores(length, tile, starts)
    assert all(s % align == 0 for s in starts)
    assert bounds[0] == 0 and bounds[-1] == length
    if length > tile:  # the last tile reaches the edge, passing it by < align
        assert 0 <= starts[-1] + tile - length < align
    else:
        assert starts == [0]
    for i, s in enumerate(starts):
        assert s <= bounds[i] < bounds[i + 1] <= s + tile
    if (length - tile) % align == 0:  # aligned edges change nothing
        assert starts == axis_starts(length, tile, overlap)


def test_aligned_plan_records_align_and_rejects_bad_align():
    plan = plan_tiles(1000, 700, 256, 64, align=32)
    assert plan.align == 32 and plan.to_dict()["align"] == 32
    assert plan.ys[-1] == 768 and plan.xs[-1] == 448  # 744 -> 768, 444 -> 448
    with pytest.raises(ValueError, match="align >= 1 dividing tile - overlap = 192"):
        plan_tiles(1000, 700, 256, 64, align=40)
    with pytest.raises(ValueError, match="align >= 1"):
        plan_tiles(1000, 700, 256, 64, align=0)
