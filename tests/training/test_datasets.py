"""Several datasets per run: instance-only folders, tiling, specs, splits, weighted order."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hvx.training.augment import AugmentConfig, Augmenter
from hvx.training.data import TileDataset
from hvx.training.datasets import (
    DatasetSpec,
    cut_tiles,
    load_any,
    load_instance_folder,
    parse_specs,
    split_datasets,
)
from hvx.training.sampling import EpochBatches, TrainTiles, epoch_order, weighted_order

MONUSEG_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "monuseg"


def _write_instances(root: Path, n: int = 4, size: int = 40, organs=None, source=False):
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    names = [f"img{i}" for i in range(n)]
    inst = np.zeros((n, size, size), np.int32)
    for i in range(n):
        inst[i, 5:12, 5:12] = 1
        inst[i, 20:30, 18:26] = 2
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "images" / f"{names[i]}.png"), img)
    arrays = {"names": np.array(names), "inst": inst}
    if source:
        arrays["source_image"] = np.array([f"src{i // 2}" for i in range(n)])
    np.savez(root / "labels.npz", **arrays)
    if organs is not None:
        rows = ["name,organ"] + [f"{a},{b}" for a, b in zip(names, organs, strict=True)]
        (root / "index.csv").write_text("\n".join(rows) + "\n")
    return names, inst


def test_instance_folder_reads_and_marks_untyped(tmp_path):
    names, inst = _write_instances(tmp_path, organs=["lung", "lung", "kidney", "bla_dder"])
    ds = load_instance_folder(tmp_path)
    assert ds.names == names and np.array_equal(ds.inst, inst)
    assert not ds.typed.any() and not ds.cls.any()
    # organ prefix (underscores in an organ are replaced: the prefix is the cohort)
    assert ds.sources == ["lung_img0", "lung_img1", "kidney_img2", "bla-dder_img3"]
    assert load_any(tmp_path).names == names  # auto: labels.npz without cls


def test_instance_folder_sources_and_errors(tmp_path):
    _write_instances(tmp_path / "a", source=True)
    assert load_instance_folder(tmp_path / "a").sources == ["src0", "src0", "src1", "src1"]
    _write_instances(tmp_path / "b")
    assert load_instance_folder(tmp_path / "b").sources == ["img0", "img1", "img2", "img3"]
    _write_instances(tmp_path / "c")
    np.savez(tmp_path / "c" / "labels.npz", names=np.array(["img0"]))
    with pytest.raises(ValueError, match=r"missing \['inst'\]"):
        load_instance_folder(tmp_path / "c")
    _write_instances(tmp_path / "d")
    (tmp_path / "d" / "images" / "img2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"img2\.png"):
        load_instance_folder(tmp_path / "d")
    with pytest.raises(FileNotFoundError, match=r"expected labels\.npz"):
        load_instance_folder(tmp_path / "nope")


def test_cut_tiles_covers_every_pixel():
    rng = np.random.default_rng(0)
    n, h, w = 2, 50, 37
    ds = TileDataset(
        images=rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
        inst=rng.integers(0, 5, (n, h, w)).astype(np.int32),
        cls=np.zeros((n, h, w), np.uint8),
        sources=["a", "b"],
        class_names=("x",),
        typed=np.array([False, False]),
    )
    tiles = cut_tiles(ds, 16)
    assert tiles.images.shape[1:3] == (16, 16)
    assert set(tiles.sources) == {"a", "b"} and not tiles.typed.any()
    # every tile equals the image region its name says; together they cover the image
    for i, src in enumerate(["a", "b"]):
        seen = np.zeros((h, w), bool)
        for k in np.flatnonzero(np.array(tiles.sources) == src):
            y = int(tiles.names[k].split("_y")[1].split("_x")[0])
            x = int(tiles.names[k].split("_x")[1])
            assert np.array_equal(tiles.images[k], ds.images[i, y : y + 16, x : x + 16])
            assert np.array_equal(tiles.inst[k], ds.inst[i, y : y + 16, x : x + 16])
            seen[y : y + 16, x : x + 16] = True
        assert seen.all()
    assert cut_tiles(ds, 64) is ds  # larger than the images: unchanged
    with pytest.raises(ValueError, match="tile_size: expected <= image size"):
        cut_tiles(ds, 40)


def test_parse_specs_checks_entries():
    specs = parse_specs(
        [{"path": "x/consep"}, {"path": "y/monuseg", "weight": 2, "tile_size": 320}]
    )
    assert [s.label for s in specs] == ["consep", "monuseg"] and specs[1].weight == 2
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['wieght'\]"):
        parse_specs([{"path": "a", "wieght": 1}])
    with pytest.raises(ValueError, match="expected distinct names"):
        parse_specs([{"path": "a/d"}, {"path": "b/d"}])
    with pytest.raises(ValueError, match="expected a non-empty list"):
        parse_specs([])
    with pytest.raises(ValueError, match="weight: expected > 0"):
        DatasetSpec(path="a", weight=0)
    with pytest.raises(ValueError, match="fmt: expected"):
        DatasetSpec(path="a", fmt="png")
    with pytest.raises(ValueError, match="expected a 'path'"):
        parse_specs([{"weight": 1}])


def test_split_datasets_per_dataset_and_by_organ(tmp_path):
    organs = ["lung"] * 4 + ["colon"] * 4 + ["breast"] * 6 + ["kidney"] * 7
    organs += ["prostate"] * 6 + ["bladder"] * 2 + ["stomach"]
    _write_instances(tmp_path / "mono", n=30, organs=organs)
    (part,) = split_datasets(
        [DatasetSpec(path=str(tmp_path / "mono"), tile_size=24)], val_fraction=0.2, seed=0
    )
    assert part.name == "mono" and not part.typed
    val_organs = sorted(s.split("_")[0] for s in part.val.sources)
    # 6 of 30, one per organ except the smallest (largest-remainder over organs)
    assert len(val_organs) == 6 and len(set(val_organs)) == 6
    assert part.val.images.shape[1:3] == (40, 40)  # validation keeps whole images
    assert part.train.images.shape[1:3] == (24, 24)  # training images cut
    assert not set(part.train.sources) & set(part.val.sources)


@pytest.mark.skipif(not MONUSEG_DIR.is_dir(), reason=f"MoNuSeg not found at {MONUSEG_DIR}")
def test_monuseg_split_spreads_validation_over_organs():
    (part,) = split_datasets([DatasetSpec(path=str(MONUSEG_DIR))], val_fraction=0.2, seed=0)
    organs = [s.split("_")[0] for s in part.val.sources]
    assert len(organs) == 6 and len(set(organs)) == 6
    assert len(part.train) == 24 and part.val.images.shape == (6, 1000, 1000, 3)


def test_weighted_order_shares_and_determinism():
    assert torch.equal(weighted_order([7], [3.0], 1, 2), epoch_order(7, 1, 2))
    a = weighted_order([10, 30], [1.0, 1.0], 5, 0)
    assert torch.equal(a, weighted_order([10, 30], [1.0, 1.0], 5, 0))
    assert not torch.equal(a, weighted_order([10, 30], [1.0, 1.0], 5, 1))
    assert len(a) == 40
    first = a[a < 10]
    assert len(first) == 20  # half of the draws, though a quarter of the tiles
    # consecutive permutations: every tile twice
    assert np.array_equal(np.bincount(first.numpy(), minlength=10), np.full(10, 2))
    second = a[a >= 10]
    assert len(second) == 20 and len(set(second.tolist())) == 20  # no repeat before all seen
    b = weighted_order([10, 30], [3.0, 1.0], 5, 0)
    assert int((b < 10).sum()) == 30
    keys = [k for batch in EpochBatches(40, 4, 5, 0, 0, sizes=[10, 30]) for k in batch]
    assert [i for _, i in keys] == a.tolist()


def test_train_tiles_over_parts_flags_untyped():
    rng = np.random.default_rng(0)

    def ds(n, size, typed):
        return TileDataset(
            images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
            inst=np.zeros((n, size, size), np.int32),
            cls=np.zeros((n, size, size), np.uint8),
            sources=[f"s{i}" for i in range(n)],
            class_names=("x",),
            typed=np.full(n, typed),
        )

    tiles = TrainTiles([ds(2, 32, True), ds(3, 48, False)], Augmenter(AugmentConfig.none()), 32, 0)
    assert len(tiles) == 5
    flags = [bool(tiles[(0, i)]["tp_valid"]) for i in range(5)]
    assert flags == [True, True, False, False, False]
    assert tiles[(0, 4)]["image"].shape == (32, 32, 3)
    with pytest.raises(ValueError, match="crop_size <= tile size 32x32"):
        TrainTiles([ds(2, 32, True), ds(3, 48, False)], Augmenter(AugmentConfig.none()), 40, 0)
