"""Finding 1 (issue 23): stitcher state bounded by the tile rows in flight.

The stitcher used to prune emitted nuclei only after the *last* tile of a row;
with a background (skipped) right-most column -- the usual slide -- every
nucleus stayed in memory and in the resume state.
"""

import numpy as np
from synth import oracle_tile, random_blobs

from hvx.tiling import Stitcher, plan_tiles


def _max_held(rows: int, skip_right: bool, seed: int = 3) -> tuple[int, int, int]:
    """(max nuclei held, nuclei emitted, state rows at the end) over a raster run."""
    tile, overlap = 128, 32
    h, w = rows * (tile - overlap) + overlap, 6 * (tile - overlap) + overlap
    inst, cls = random_blobs(h, w, h * w // 500, 10, seed=seed)
    plan = plan_tiles(h, w, tile, overlap)
    sched = [i for i in range(len(plan)) if not (skip_right and i % plan.n_cols == plan.n_cols - 1)]
    st = Stitcher(plan, sched)
    most = 0
    for i in sched:
        t = plan.tile_at(i)
        ci, tab = oracle_tile(inst, cls, t.y0, t.x0, tile)
        st.add_tile(i, ci, tab)
        most = max(most, st.held())
    n_state = len(st.state()["ints"])
    st.finish()
    return most, st.stats.emitted, n_state


def test_held_nuclei_are_bounded_by_rows_in_flight_with_a_background_right_column():
    short, n_short, _ = _max_held(6, skip_right=True)
    tall, n_tall, state_rows = _max_held(24, skip_right=True)
    assert n_tall > 3 * n_short  # four times the area, about four times the nuclei
    # Held nuclei depend on the width (rows in flight), not on the height.
    assert tall <= 1.5 * short, (short, tall)
    assert tall < n_tall / 4, (tall, n_tall)
    assert state_rows < n_tall / 4  # the resume state is bounded the same way


def test_held_max_is_recorded_in_the_stats():
    most, _, _ = _max_held(6, skip_right=True)
    tile, overlap = 128, 32
    h = 6 * (tile - overlap) + overlap
    plan = plan_tiles(h, h, tile, overlap)
    st = Stitcher(plan)
    inst = np.zeros((h, h), np.int32)
    for i in range(len(plan)):
        t = plan.tile_at(i)
        ci, tab = oracle_tile(inst, inst.astype(np.uint8), t.y0, t.x0, tile)
        st.add_tile(i, ci, tab)
    assert st.stats.held_max == 0 and most > 0
