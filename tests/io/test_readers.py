import cv2
import numpy as np
import pytest

from hvx.io import ImageReadError, find_images, read_image


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
def test_lossless_formats_round_trip_as_rgb(tmp_path, rgb, suffix):
    path = tmp_path / f"a{suffix}"
    assert cv2.imwrite(str(path), rgb[..., ::-1])
    got = read_image(path)
    assert got.dtype == np.uint8 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, rgb)


def test_jpeg_is_read_as_rgb(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0] = 250  # red
    cv2.imwrite(str(tmp_path / "r.jpg"), img[..., ::-1])
    got = read_image(tmp_path / "r.jpg")
    assert got.shape == (16, 16, 3) and got[..., 0].mean() > 200 and got[..., 2].mean() < 50


def test_grey_and_rgba_become_rgb(tmp_path, rgb):
    cv2.imwrite(str(tmp_path / "g.png"), rgb[..., 0])
    assert np.array_equal(read_image(tmp_path / "g.png"), np.repeat(rgb[..., :1], 3, axis=2))
    rgba = np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)


def test_unreadable_files_raise_clear_errors(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"this is not a png")
    with pytest.raises(ImageReadError, match="OpenCV cannot decode"):
        read_image(tmp_path / "bad.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="cannot decode"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match="missing path"):
        read_image(tmp_path / "nope.png")
    cv2.imwrite(str(tmp_path / "deep.png"), np.zeros((4, 4), np.uint16))
    with pytest.raises(ImageReadError, match="expected an 8-bit image, got uint16"):
        read_image(tmp_path / "deep.png")
    assert issubclass(ImageReadError, ValueError)


def test_find_images_expands_folders_sorted_and_deduplicates(tmp_path, rgb):
    for name in ("b.png", "a.TIF", "c.jpeg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    found = find_images([tmp_path, tmp_path / "b.png", tmp_path / "notes.txt"])
    assert [p.name for p in found] == ["a.TIF", "b.png", "c.jpeg", "notes.txt"]
    with pytest.raises(FileNotFoundError, match="missing path"):
        find_images([tmp_path / "absent"])
