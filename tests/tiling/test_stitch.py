import io

import cv2
import numpy as np
import pytest
from synth import mosaic, oracle_tile, random_blobs, relabel, stitch_all

from hvx.tiling import Stitcher, plan_tiles


def _matches(truth: np.ndarray, pred: np.ndarray):
    """Per truth nucleus, how many predicted nuclei cover >= half of themselves with it."""
    counts = {}
    for p in np.unique(pred):
        if p == 0:
            continue
        m = pred == p
        t, c = np.unique(truth[m], return_counts=True)
        best = t[c.argmax()]
        if best and c.max() >= 0.5 * m.sum():
            counts[best] = counts.get(best, 0) + 1
    return counts


@pytest.mark.parametrize(
    ("h", "w", "tile", "overlap"),
    [(700, 900, 128, 48), (300, 257, 128, 64), (90, 150, 128, 32), (513, 1000, 256, 64)],
)
def test_tiled_equals_one_pass_on_random_blobs(h, w, tile, overlap):
    inst, cls = random_blobs(h, w, n=h * w // 600, max_radius=overlap // 2 - 2, seed=h + w)
    plan = plan_tiles(h, w, tile, overlap)
    out, _, st = stitch_all(plan, inst, cls)
    assert np.array_equal(relabel(out), relabel(inst))
    assert st.stats.cut_emitted == 0
    assert st.stats.emitted == len(np.unique(inst)) - 1


def test_ids_are_consecutive_in_emission_order():
    inst, cls = random_blobs(400, 400, 300, 10, seed=3)
    _, got, _ = stitch_all(plan_tiles(400, 400, 128, 32), inst, cls)
    ids = np.concatenate([g.id for g in got])
    assert np.array_equal(ids, np.arange(1, len(ids) + 1))


def test_nuclei_larger_than_the_overlap_are_reassembled_from_pieces():
    inst, cls = random_blobs(600, 600, 250, 30, seed=5)
    out, _, st = stitch_all(plan_tiles(600, 600, 128, 16), inst, cls)
    assert st.stats.reassembled > 0  # some nuclei were seen whole by no tile ...
    assert np.array_equal(relabel(out), relabel(inst))  # ... and still come out once, whole


def test_pieces_of_disagreeing_tiles_never_duplicate():
    inst, cls = random_blobs(600, 600, 250, 30, seed=6)
    out, _, _ = stitch_all(plan_tiles(600, 600, 128, 16), inst, cls, jitter=_jitter(6))
    counts = _matches(inst, out)
    assert max(counts.values()) == 1
    assert len(counts) >= 0.97 * (len(np.unique(inst)) - 1)


def _jitter(seed):
    rng = np.random.default_rng(seed)
    k = np.ones((3, 3), np.uint8)

    def f(ci):
        # each tile's "network" sees nuclei 1 px larger or smaller than its neighbour's
        if rng.random() < 0.5:
            grown = cv2.dilate(ci.astype(np.float32), k).astype(np.int32)
            return np.where(ci > 0, ci, grown)  # grow into background only
        return np.where(cv2.erode((ci > 0).astype(np.uint8), k) > 0, ci, 0)

    return f


@pytest.mark.parametrize("seed", [0, 1])
def test_disagreeing_tiles_keep_each_nucleus_once(seed):
    inst, cls = random_blobs(640, 640, 500, 12, seed=seed)
    out, _, _ = stitch_all(plan_tiles(640, 640, 128, 32), inst, cls, jitter=_jitter(seed))
    counts = _matches(inst, out)
    assert max(counts.values()) == 1  # no duplicates at seams
    # none lost, except nuclei so small that a shrinking tile drops them (< 10 px)
    eroded = np.where(cv2.erode((inst > 0).astype(np.uint8), np.ones((3, 3), np.uint8)), inst, 0)
    n_truth = int((np.bincount(eroded.ravel())[1:] >= 10).sum())
    assert len(counts) >= n_truth


def test_skipped_tiles_own_nothing_and_neighbours_keep_their_nuclei():
    inst, cls = random_blobs(512, 512, 200, 10, seed=7)
    plan = plan_tiles(512, 512, 128, 32)
    skipped = {5, 6, 12}
    for i in skipped:  # background tiles: no nuclei in their core
        y0, x0, y1, x1 = plan.tile_at(i).core
        inst[y0:y1, x0:x1] = 0
    inst = relabel(inst)
    scheduled = [i for i in range(len(plan)) if i not in skipped]
    out, _, _ = stitch_all(plan, inst, cls, scheduled=scheduled)
    assert np.array_equal(relabel(out), relabel(inst))


def test_state_round_trip_resumes_identically():
    inst, cls = random_blobs(500, 700, 400, 12, seed=11)
    plan = plan_tiles(500, 700, 128, 32)
    full, _, _ = stitch_all(plan, inst, cls)
    first, _, st = stitch_all(plan, inst, cls, stop=17)
    buf = io.BytesIO()
    np.savez(buf, **st.state())
    buf.seek(0)
    with np.load(buf) as z:
        st2 = Stitcher.from_state(plan, {k: z[k] for k in z.files})
    assert st2.next_id == st.next_id and st2.stats == st.stats
    rest, _, _ = stitch_all(plan, inst, cls, stitcher=st2, start=st.last_tile + 1)
    merged = np.where(first > 0, first, rest)
    assert np.array_equal(merged, full)


def test_stitcher_rejects_bad_calls():
    plan = plan_tiles(300, 300, 128, 32)
    st = Stitcher(plan, [0, 1, 2])
    inst = np.zeros((128, 128), np.int32)
    _, tab = oracle_tile(inst, inst.astype(np.uint8), 0, 0, 128)
    st.add_tile(1, inst, tab)
    with pytest.raises(ValueError, match="increasing raster order"):
        st.add_tile(0, inst, tab)
    with pytest.raises(ValueError, match="scheduled tile index"):
        st.add_tile(5, inst, tab)
    with pytest.raises(ValueError, match=r"shape \(128, 128\)"):
        st.add_tile(2, inst[:64], tab)
    with pytest.raises(ValueError, match="match_fraction"):
        Stitcher(plan, match_fraction=0)
    with pytest.raises(ValueError, match="scheduled tile indices"):
        Stitcher(plan, [99])


def test_consep_mosaic_tiled_equals_one_pass(consep_dir):
    # 40x CoNSeP nuclei reach 106 px: overlap 128 sees every one whole.
    _, inst, cls = mosaic(consep_dir, 4, 5, seed=1)
    inst, cls = inst[:1000, :1200], cls[:1000, :1200]
    plan = plan_tiles(*inst.shape, 256, 128)
    out, _, st = stitch_all(plan, inst, cls)
    assert np.array_equal(relabel(out), relabel(inst))
    assert st.stats.cut_emitted == 0 and st.stats.duplicates > 0


def test_consep_mosaic_at_20x_with_default_overlap(consep_dir):
    _, inst, cls = mosaic(consep_dir, 4, 4, seed=2, scale=0.5)
    plan = plan_tiles(*inst.shape, 128, 64)
    out, _, _ = stitch_all(plan, inst, cls)
    assert np.array_equal(relabel(out), relabel(inst))
