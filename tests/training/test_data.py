"""Dataset loaders (CoNiC npy, CoNSeP-style folder), TileDataset and the source split."""

import csv
import shutil

import cv2
import numpy as np
import pytest

from hvx.training.data import (
    CONIC_CLASSES,
    CONSEP_CLASSES,
    TileDataset,
    load_dataset,
    split_by_source,
)


def _tiles(n=4, h=16, w=24, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    inst = np.zeros((n, h, w), np.int32)
    cls = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        inst[i, 2:6, 3:9] = 1
        inst[i, 8:14, 10:20] = 2
        cls[i][inst[i] == 1] = 1 + i % 4
        cls[i][inst[i] == 2] = 4 - i % 4
    return images, inst, cls


def _write_folder(root, n=4, names=None, sources=None, skip_png=(), **npz_overrides):
    images, inst, cls = _tiles(n)
    names = [f"img{i // 2}_{i:03d}" for i in range(n)] if names is None else names
    sources = [f"img{i // 2}" for i in range(n)] if sources is None else sources
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, img in zip(names, images, strict=True):
        if name not in skip_png:
            cv2.imwrite(str(root / "images" / f"{name}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    arrays = {
        "names": np.asarray(names),
        "source_image": np.array(sources),
        "inst": inst,
        "cls": cls,
    }
    arrays.update(npz_overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez_compressed(root / "labels.npz", **arrays)
    return images, inst, cls


def _write_conic(root, n=5, patch_info=True, counts=True, labels_dtype=np.uint16):
    images, inst, cls = _tiles(n, 32, 32)
    cls = np.minimum(cls, 6)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "images.npy", images)
    np.save(root / "labels.npy", np.stack([inst, cls], axis=-1).astype(labels_dtype))
    patches = [f"{'crag' if i < 3 else 'glas'}_{i // 2}-{i:04d}" for i in range(n)]
    if patch_info:
        with (root / "patch_info.csv").open("w", newline="") as f:
            csv.writer(f).writerows([["patch_info"], *[[p] for p in patches]])
    if counts:
        with (root / "counts.csv").open("w", newline="") as f:
            csv.writer(f).writerows([list(CONIC_CLASSES), *[[0] * 6 for _ in range(n)]])
    return images, inst, cls, patches


# --- folder format ----------------------------------------------------------------------


def test_folder_format_round_trip(tmp_path):
    images, inst, cls = _write_folder(tmp_path)
    ds = load_dataset(tmp_path)
    assert len(ds) == 4 and ds.num_types == 5
    np.testing.assert_array_equal(ds.images, images)  # RGB, not BGR
    np.testing.assert_array_equal(ds.inst, inst)
    np.testing.assert_array_equal(ds.cls, cls)
    assert ds.inst.dtype == np.int32 and ds.cls.dtype == np.uint8
    assert ds.sources == ["img0", "img0", "img1", "img1"]
    assert ds.names == ["img0_000", "img0_001", "img1_002", "img1_003"]
    assert ds.class_names == CONSEP_CLASSES
    assert load_dataset(tmp_path, fmt="folder").names == ds.names


def test_folder_class_names_from_npz_and_argument(tmp_path):
    _write_folder(tmp_path, class_names=np.array(["a", "b", "c", "d", "e"]))
    assert load_dataset(tmp_path).class_names == ("a", "b", "c", "d", "e")
    assert load_dataset(tmp_path, class_names=["w", "x", "y", "z"]).class_names == tuple("wxyz")
    with pytest.raises(ValueError, match=r"cls: expected values in \[0, 2\], got 0..4"):
        load_dataset(tmp_path, class_names=["x", "y"])
    with pytest.raises(ValueError, match="class_names: expected a non-empty sequence"):
        load_dataset(tmp_path, class_names="abc")


def test_folder_missing_keys(tmp_path):
    _write_folder(tmp_path, source_image=None)
    with pytest.raises(
        ValueError, match=r"labels.npz: expected keys .* missing \['source_image'\]"
    ):
        load_dataset(tmp_path)


def test_folder_missing_and_unlisted_images(tmp_path):
    _write_folder(tmp_path / "a", skip_png=("img0_001",))
    with pytest.raises(ValueError, match=r"1 missing \(e.g. \['img0_001'\]\), 0 unlisted"):
        load_dataset(tmp_path / "a")
    _write_folder(tmp_path / "b")
    cv2.imwrite(str(tmp_path / "b" / "images" / "stray.png"), np.zeros((16, 24, 3), np.uint8))
    with pytest.raises(ValueError, match=r"0 missing .* 1 unlisted \(e.g. \['stray'\]\)"):
        load_dataset(tmp_path / "b")


def test_folder_image_shape_and_kind(tmp_path):
    _write_folder(tmp_path)
    cv2.imwrite(str(tmp_path / "images" / "img0_000.png"), np.zeros((16, 20, 3), np.uint8))
    with pytest.raises(
        ValueError, match=r"img0_000.png: expected shape \(16, 24, 3\).*got \(16, 20, 3\)"
    ):
        load_dataset(tmp_path)
    cv2.imwrite(str(tmp_path / "images" / "img0_000.png"), np.zeros((16, 24), np.uint8))
    with pytest.raises(ValueError, match="expected an 8-bit RGB image, got uint8 array of shape"):
        load_dataset(tmp_path)
    (tmp_path / "images" / "img0_000.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot decode as an image"):
        load_dataset(tmp_path)


def test_folder_label_shapes_and_values(tmp_path):
    _, inst, _ = _write_folder(tmp_path / "a", cls=np.zeros((4, 16, 23), np.uint8))
    with pytest.raises(ValueError, match=r"cls: expected shape \(4, 16, 24\) like inst"):
        load_dataset(tmp_path / "a")
    _write_folder(tmp_path / "b", inst=-inst)
    with pytest.raises(ValueError, match=r"inst: expected values in \[0, 2147483647\], got -2..0"):
        load_dataset(tmp_path / "b")
    _write_folder(tmp_path / "c", inst=inst.astype(np.float32))
    with pytest.raises(TypeError, match="inst: expected an integer dtype, got float32"):
        load_dataset(tmp_path / "c")
    _write_folder(tmp_path / "d", names=["x"] * 4)
    with pytest.raises(ValueError, match="expected unique tile names"):
        load_dataset(tmp_path / "d")
    _write_folder(tmp_path / "e", source_image=np.array(["s"] * 3))
    with pytest.raises(ValueError, match=r"source_image: expected \(4,\) strings"):
        load_dataset(tmp_path / "e")


def test_folder_refuses_pickled_arrays(tmp_path):
    _write_folder(tmp_path)
    arrays = dict(np.load(tmp_path / "labels.npz"))
    arrays["names"] = arrays["names"].astype(object)
    np.savez(tmp_path / "labels.npz", **arrays)
    with pytest.raises(ValueError, match="cannot read without pickle"):
        load_dataset(tmp_path)


def test_missing_things(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a dataset folder"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="found neither"):
        load_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"expected labels.npz"):
        load_dataset(tmp_path, fmt="folder")
    with pytest.raises(FileNotFoundError, match=r"expected images.npy"):
        load_dataset(tmp_path, fmt="conic")
    with pytest.raises(ValueError, match="fmt: expected 'auto', 'conic' or 'folder', got 'png'"):
        load_dataset(tmp_path, fmt="png")
    _write_folder(tmp_path)
    shutil.rmtree(tmp_path / "images")
    with pytest.raises(FileNotFoundError, match="expected an images/ folder"):
        load_dataset(tmp_path)


# --- CoNiC format -----------------------------------------------------------------------


def test_conic_round_trip(tmp_path):
    images, inst, cls, patches = _write_conic(tmp_path)
    ds = load_dataset(tmp_path)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.inst, inst)
    np.testing.assert_array_equal(ds.cls, cls)
    assert ds.inst.dtype == np.int32 and ds.cls.dtype == np.uint8
    assert ds.class_names == CONIC_CLASSES and ds.num_types == 7
    assert ds.sources == [p.rsplit("-", 1)[0] for p in patches]
    assert ds.sources[:3] == ["crag_0", "crag_0", "crag_1"]
    assert ds.names == patches
    assert not isinstance(ds.images, np.memmap)


def test_conic_source_keeps_dashes_in_the_image_name(tmp_path):
    _write_conic(tmp_path, n=2)
    with (tmp_path / "patch_info.csv").open("w") as f:
        f.write("patch_info\nmy-image_1-0000\nmy-image_1-0001\n")
    assert load_dataset(tmp_path).sources == ["my-image_1", "my-image_1"]


def test_conic_optional_counts(tmp_path):
    _write_conic(tmp_path, counts=False)
    assert len(load_dataset(tmp_path, fmt="conic")) == 5


def test_conic_errors(tmp_path):
    _write_conic(tmp_path / "a", patch_info=False)
    with pytest.raises(FileNotFoundError, match=r"expected patch_info.csv"):
        load_dataset(tmp_path / "a")
    _write_conic(tmp_path / "b")
    np.save(tmp_path / "b" / "labels.npy", np.zeros((5, 32, 31, 2), np.uint16))
    with pytest.raises(ValueError, match=r"labels.npy: expected shape \(5, 32, 32, 2\)"):
        load_dataset(tmp_path / "b")
    _write_conic(tmp_path / "c")
    np.save(tmp_path / "c" / "images.npy", np.zeros((5, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"images.npy: expected uint8 .* got float32"):
        load_dataset(tmp_path / "c")
    _write_conic(tmp_path / "d")
    (tmp_path / "d" / "counts.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"counts.csv: expected 5 rows, got 1"):
        load_dataset(tmp_path / "d")
    _write_conic(tmp_path / "e")
    (tmp_path / "e" / "patch_info.csv").write_text("name\nx-0\n")
    with pytest.raises(ValueError, match="expected a column 'patch_info'"):
        load_dataset(tmp_path / "e")
    _, inst, cls, _ = _write_conic(tmp_path / "f")
    np.save(tmp_path / "f" / "labels.npy", np.stack([inst, cls + 7], -1).astype(np.uint16))
    with pytest.raises(ValueError, match=r"labels.npy\[..., 1\]: expected values in \[0, 6\]"):
        load_dataset(tmp_path / "f")
    _write_conic(tmp_path / "g")
    np.save(tmp_path / "g" / "images.npy", np.empty(5, object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot read as a plain numpy array"):
        load_dataset(tmp_path / "g")


# --- the real CoNSeP folder -------------------------------------------------------------


def test_real_consep_folder(consep_dir):
    ds = load_dataset(consep_dir)
    assert len(ds) == 432 and ds.images.shape == (432, 256, 256, 3)
    assert ds.class_names == CONSEP_CLASSES
    assert len(set(ds.sources)) == 27
    i = ds.names.index("train_1_000")
    bgr = cv2.imread(str(consep_dir / "images" / "train_1_000.png"), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(ds.images[i], bgr[..., ::-1])
    assert ds.sources[i] == "train_1"
    assert int(ds.cls.max()) == 4
    for k in range(0, 432, 43):  # every instance has exactly one class
        pairs = np.unique(np.stack([ds.inst[k].ravel(), ds.cls[k].ravel()]), axis=1)
        ids = pairs[0][pairs[0] > 0]
        assert len(ids) == len(np.unique(ids))
    train, val = split_by_source(ds.sources, val_fraction=0.2, seed=0)
    assert len({ds.sources[j] for j in val}) == 5  # 22 / 5 as data/README suggests
    assert len({ds.sources[j] for j in train}) == 22


# --- TileDataset ------------------------------------------------------------------------


def test_subset_and_validation():
    images, inst, cls = _tiles(5)
    ds = TileDataset(images, inst, cls, [f"s{i % 2}" for i in range(5)], ("a", "b", "c", "d"))
    assert ds.names == [f"tile_{i}" for i in range(5)]
    sub = ds.subset([3, 1])
    np.testing.assert_array_equal(sub.images, images[[3, 1]])
    assert sub.sources == ["s1", "s1"] and sub.names == ["tile_3", "tile_1"]
    sub.images[0] = 0
    assert ds.images[3].any()  # a copy
    mask = np.array([True, False, True, False, False])
    assert ds.subset(mask).names == ["tile_0", "tile_2"]
    assert len(ds.subset(np.array([], np.int64))) == 0
    with pytest.raises(ValueError, match=r"idx: expected indices in \[0, 5\), got 0..5"):
        ds.subset([0, 5])
    with pytest.raises(ValueError, match=r"boolean mask of shape \(5,\)"):
        ds.subset(mask[:3])
    with pytest.raises(TypeError, match="idx: expected a 1-D array of tile indices"):
        ds.subset([0.5])
    with pytest.raises(TypeError, match="inst: expected dtype int32, got int64"):
        TileDataset(images, inst.astype(np.int64), cls, ["s"] * 5, ("a",))
    with pytest.raises(ValueError, match=r"cls: expected shape \(5, 16, 24\)"):
        TileDataset(images, inst, cls[:4], ["s"] * 5, ("a",))
    with pytest.raises(ValueError, match="sources: expected 5 names, got 4"):
        TileDataset(images, inst, cls, ["s"] * 4, ("a",))
    with pytest.raises(ValueError, match=r"images: expected ndarray\[N, H, W, 3\]"):
        TileDataset(images[..., :2], inst, cls, ["s"] * 5, ("a",))


# --- split_by_source --------------------------------------------------------------------


def _sources(n_images=27, tiles=16, prefix="train"):
    return [f"{prefix}_{i}" for i in range(1, n_images + 1) for _ in range(tiles)]


def test_split_properties():
    sources = _sources()
    train, val = split_by_source(sources, val_fraction=0.2, seed=0)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(sources)))
    train_src = {sources[i] for i in train}
    val_src = {sources[i] for i in val}
    assert not train_src & val_src
    assert len(val_src) == 5 and len(train_src) == 22
    assert len(val) == 5 * 16  # whole images, never single tiles


def test_split_is_deterministic_and_order_free():
    sources = _sources()
    a = split_by_source(sources, seed=3)
    b = split_by_source(sources, seed=3)
    np.testing.assert_array_equal(a[1], b[1])
    perm = np.random.default_rng(0).permutation(len(sources))
    shuffled = [sources[i] for i in perm]
    _, val_shuffled = split_by_source(shuffled, seed=3)
    assert {shuffled[i] for i in val_shuffled} == {sources[i] for i in a[1]}
    others = {frozenset(sources[i] for i in split_by_source(sources, seed=s)[1]) for s in range(6)}
    assert len(others) > 1  # the seed matters


@pytest.mark.parametrize(
    ("n_images", "fraction", "n_val"),
    [(2, 0.2, 1), (2, 0.9, 1), (3, 0.01, 1), (3, 0.99, 2), (10, 0.25, 3), (10, 0.35, 4)],
)
def test_split_counts_are_clamped(n_images, fraction, n_val):
    sources = _sources(n_images, tiles=2)
    _, val = split_by_source(sources, val_fraction=fraction)
    assert len({sources[i] for i in val}) == n_val


def test_split_errors():
    with pytest.raises(ValueError, match="at least 2 distinct source images to split, got 1"):
        split_by_source(["a", "a", "a"])
    with pytest.raises(ValueError, match="got 0"):
        split_by_source([])
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"val_fraction: expected a value in \(0, 1\)"):
            split_by_source(["a", "b"], val_fraction=bad)
    with pytest.raises(TypeError, match="val_fraction: expected a float, got str"):
        split_by_source(["a", "b"], val_fraction="0.2")
    with pytest.raises(TypeError, match="sources: expected a sequence of names, got str"):
        split_by_source("ab")


def test_split_stratifies_by_cohort():
    sources = (
        _sources(10, 3, "crag") + _sources(10, 3, "glas") + _sources(20, 3, "pannuke")
    )  # 40 images, 8 in validation: 2 + 2 + 4
    _, val = split_by_source(sources, val_fraction=0.2, seed=1)
    val_src = {sources[i] for i in val}
    counts = {c: sum(s.startswith(c + "_") for s in val_src) for c in ("crag", "glas", "pannuke")}
    assert counts == {"crag": 2, "glas": 2, "pannuke": 4}
    _, val_plain = split_by_source(sources, val_fraction=0.2, seed=1, stratify=False)
    assert len({sources[i] for i in val_plain}) == 8
