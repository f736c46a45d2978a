"""Regions, packed tile results and the region store (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hvx.distributed.regions import RegionStore, pack_tiles, plan_regions, unpack_tiles
from hvx.results import NucleusTable
from hvx.tiling.plan import plan_tiles


def _table(rng, k: int) -> NucleusTable:
    return NucleusTable(
        id=np.arange(1, k + 1, dtype=np.int32),
        type=rng.integers(0, 5, k).astype(np.int32),
        type_prob=rng.random(k).astype(np.float32),
        centroid=rng.random((k, 2)) * 100,
        bbox=rng.integers(0, 50, (k, 4)).astype(np.int32),
        area=rng.integers(1, 900, k).astype(np.int64),
        contours=[
            rng.integers(0, 256, (int(rng.integers(3, 9)), 2)).astype(np.int32) for _ in range(k)
        ],
    )


def test_regions_partition_the_scheduled_tiles():
    plan = plan_tiles(1000, 1300, 256, 64)  # 5 x 7 tiles: blocks at the edges are partial
    rng = np.random.default_rng(0)
    scheduled = sorted(rng.choice(len(plan), 20, replace=False).tolist())
    for side in (1, 2, 3, 7, 50):
        regions = plan_regions(plan, scheduled, side)
        got = [t for r in regions for t in r.tiles]
        assert sorted(got) == scheduled and len(got) == len(set(got))
        for r in regions:
            rows = {t // plan.n_cols // side for t in r.tiles}
            cols = {t % plan.n_cols // side for t in r.tiles}
            assert len(rows) == len(cols) == 1 and list(r.tiles) == sorted(r.tiles)
    assert plan_regions(plan, [], 2) == []
    with pytest.raises(ValueError, match="region side"):
        plan_regions(plan, scheduled, 0)


def test_pack_round_trip_is_exact_including_empty_tiles():
    rng = np.random.default_rng(1)
    tables = [_table(rng, 3), _table(rng, 0), _table(rng, 5)]
    inst = rng.integers(0, 9, (3, 256, 256)).astype(np.int32)
    back = list(unpack_tiles(pack_tiles([4, 9, 11], inst, tables)))
    assert [i for i, _, _ in back] == [4, 9, 11]
    for k, (_, m, t) in enumerate(back):
        assert m.dtype == np.int32 and np.array_equal(m, inst[k])
        ref = tables[k]
        for name in ("id", "type", "type_prob", "centroid", "bbox", "area"):
            a, b = getattr(t, name), getattr(ref, name)
            assert a.dtype == b.dtype and np.array_equal(a, b), name
        assert len(t.contours) == len(ref.contours)
        assert all(np.array_equal(a, b) for a, b in zip(t.contours, ref.contours, strict=True))
    assert list(unpack_tiles(pack_tiles([], np.zeros((0, 4, 4), np.int32), []))) == []
    with pytest.raises(ValueError, match="expected 2 instance maps"):
        pack_tiles([1, 2], inst, tables)


def _blob(tiles):
    rng = np.random.default_rng(tiles[0])
    inst = np.stack([np.full((256, 256), t, np.int32) for t in tiles])
    return pack_tiles(tiles, inst, [_table(rng, 2) for _ in tiles])


def test_store_commits_once_replays_in_raster_order_and_resets_on_a_new_layout(tmp_path):
    plan = plan_tiles(900, 900, 256, 64)  # 5 x 5 tiles
    scheduled = [t for t in range(len(plan)) if t not in (6, 12, 18)]
    regions = plan_regions(plan, scheduled, 2)
    store = RegionStore(tmp_path, "hash-a", {"side": 2})
    for r in regions:
        blobs = [_blob(list(r.tiles[:2])), *([_blob(list(r.tiles[2:]))] if r.tiles[2:] else [])]
        assert store.commit(r.index, blobs)
    assert store.done() == {r.index for r in regions}
    assert not store.commit(regions[0].index, [_blob([0])])  # a retried duplicate: ignored
    assert not list(tmp_path.glob("regions/.*tmp"))
    todo = [t for t in scheduled if t > 7]
    got = [(i, int(m[0, 0])) for i, m, _ in store.replay(regions, plan, 2)(todo)]
    assert got == [(t, t) for t in todo]  # raster order across blocks, the right maps
    with pytest.raises(ValueError, match="lacks it"):
        list(store.replay(regions, plan, 2)([6]))  # a background tile no region holds
    assert RegionStore(tmp_path, "hash-a", {"side": 2}).done() == store.done()  # reopened
    assert RegionStore(tmp_path, "hash-b", {"side": 2}).done() == set()  # another run


def test_ray_failures_are_retried_hvx_errors_are_not():
    ray = pytest.importorskip("ray", reason="hvx.distributed needs Ray: pip install 'hvx[ray]'")
    from hvx.distributed.driver import _is_system_error

    assert _is_system_error(ray.exceptions.ActorDiedError())
    assert _is_system_error(ray.exceptions.ObjectLostError("0" * 56, None, ""))
    assert _is_system_error(ray.exceptions.WorkerCrashedError())
    assert not _is_system_error(ValueError("expected an (H, W, 3) uint8 RGB image"))
    wrapped = ray.exceptions.RayTaskError("postprocess_chunk", "tb", ValueError("bad heads"))
    assert not _is_system_error(wrapped)
    died = ray.exceptions.RayTaskError("heads", "tb", ray.exceptions.ActorDiedError())
    assert _is_system_error(died)


def test_hvx_slide_takes_several_slides_and_a_ray_address():
    from hvx.cli import build_parser
    from hvx.distributed import output_folders

    args = build_parser().parse_args(["slide", "a.svs", "b.svs", "--out", "o"])
    assert [p.name for p in args.inputs] == ["a.svs", "b.svs"] and args.model is None
    assert args.ray is None and args.region == 4096
    args = build_parser().parse_args(["slide", "a.svs", "--out", "o", "--ray"])
    assert args.ray == "local"
    args = build_parser().parse_args(["slide", "a.svs", "--out", "o", "--ray", "10.0.0.1:6379"])
    assert args.ray == "10.0.0.1:6379"
    assert output_folders([Path("x/a.svs")], Path("o")) == [(Path("x/a.svs"), Path("o"))]
    assert [f for _, f in output_folders([Path("a.svs"), Path("b.tif")], Path("o"))] == [
        Path("o/a"),
        Path("o/b"),
    ]
    with pytest.raises(ValueError, match="share the output folder name"):
        output_folders([Path("x/a.svs"), Path("y/a.svs")], Path("o"))
