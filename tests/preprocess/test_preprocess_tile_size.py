"""Fixed-size CLAHE tiles (PreprocessConfig.tile_size): every impl == OpenCV on the
padded image, 256 tiles == the 8x8 grid, and aligned crops see the same input."""

import os

import numpy as np
import pytest
import torch

from hvx.preprocess import PreprocessConfig, preprocess
from hvx.preprocess._params import ClaheGeometry
from hvx.preprocess.reference import clahe_rgb_ref, clahe_rgb_tiles_ref, planes_ref

SIZES = [(1, 1), (7, 300), (255, 257), (100, 33), (256, 256)]
TRITON = os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()


def planes_of(out: torch.Tensor) -> np.ndarray:
    return np.rint(out.double().cpu().numpy() * 255.0).astype(np.uint8)


def test_config_validates_and_round_trips():
    cfg = PreprocessConfig(tile_size=32)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert PreprocessConfig().to_dict()["tile_size"] is None
    with pytest.raises(ValueError, match="tile_size >= 1 or None"):
        PreprocessConfig(tile_size=0)
    with pytest.raises(TypeError, match="tile_size as an int"):
        PreprocessConfig(tile_size=32.0)


def test_geometry_uses_whole_tiles():
    g = ClaheGeometry.create(300, 257, (8, 8), 2.0, tile_size=32)
    assert (g.grid_x, g.grid_y, g.tile_w, g.tile_h) == (9, 10, 32, 32)
    assert g.clip == int(2.0 * 32 * 32 / 256)
    # without tile_size the configured grid is used, on the image padded to it
    d = PreprocessConfig()
    g = ClaheGeometry.create(300, 257, d.tile_grid, d.clip_limit, d.tile_size)
    assert (g.grid_x, g.grid_y, g.tile_w, g.tile_h) == (8, 8, 33, 38)


def test_reference_is_opencv_on_the_padded_image(rand):
    img = rand(3, 1, 70, 45)[0]
    padded = np.pad(img, ((0, 26), (0, 19), (0, 0)), mode="reflect")  # numpy reflect == 101
    want = clahe_rgb_ref(padded, 2.0, (2, 3))[:70, :45]
    np.testing.assert_array_equal(clahe_rgb_tiles_ref(img, 2.0, 32), want)


def test_256_tile_with_32px_tiles_equals_8x8_grid(real_tiles):
    b = real_tiles(2)
    np.testing.assert_array_equal(
        planes_ref(b, PreprocessConfig(tile_size=32)), planes_ref(b, PreprocessConfig())
    )


@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("tile_size", [1, 5, 16, 32, 64])
def test_numba_matches_reference(rand, size, tile_size):
    cfg = PreprocessConfig(tile_size=tile_size, clip_limit=40.0 if tile_size == 5 else 2.0)
    b = rand(sum(size) + tile_size, 2, *size)
    got = planes_of(preprocess(b, cfg, impl="numba"))
    np.testing.assert_array_equal(got, planes_ref(b, cfg))


@pytest.mark.skipif(not TRITON, reason="Triton needs a CUDA GPU or TRITON_INTERPRET=1")
@pytest.mark.parametrize(("size", "tile_size"), [((7, 300), 16), ((255, 257), 32), ((1, 1), 32)])
def test_triton_matches_reference(rand, size, tile_size):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = PreprocessConfig(tile_size=tile_size)
    b = rand(7, 1, *size)
    out = preprocess(b, cfg, device=dev, dtype=torch.float32, impl="triton")
    np.testing.assert_array_equal(planes_of(out), planes_ref(b, cfg))


@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_aligned_crop_sees_the_whole_images_input(real_image, impl):
    """A crop at multiples of tile_size == the whole image, except within tile_size/2
    of the crop's border (where OpenCV clamps instead of interpolating)."""
    cfg = PreprocessConfig(tile_size=32)
    big = real_image(480, 416)
    whole = planes_of(preprocess(big, cfg, impl=impl))[0]
    y0, x0 = 64, 96
    crop = planes_of(preprocess(big[:, y0 : y0 + 256, x0 : x0 + 256], cfg, impl=impl))[0]
    inner = (slice(None), slice(16, 240), slice(16, 240))
    np.testing.assert_array_equal(crop[inner], whole[:, y0 + 16 : y0 + 240, x0 + 16 : x0 + 240])
    # the fixed grid does not have this property
    fixed = PreprocessConfig()
    w8 = planes_of(preprocess(big, fixed, impl=impl))[0]
    c8 = planes_of(preprocess(big[:, y0 : y0 + 256, x0 : x0 + 256], fixed, impl=impl))[0]
    assert (c8[inner] != w8[:, y0 + 16 : y0 + 240, x0 + 16 : x0 + 240]).mean() > 0.1
