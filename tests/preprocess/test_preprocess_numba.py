"""numba CPU path == OpenCV, bit for bit on the uint8 planes."""

import cv2
import numpy as np
import pytest
import torch
from numba import njit

from hvx.preprocess import PreprocessConfig, _numba, preprocess
from hvx.preprocess._numba import _exact_tiles, _rows, _x_weights
from hvx.preprocess._params import SDIV, norm_table
from hvx.preprocess.reference import planes_ref, preprocess_ref

SIZES = [(1, 1), (7, 300), (255, 257), (256, 256), (1024, 768)]
GRIDS = [(8, 8), (3, 5), (1, 1), (16, 16)]
CLIPS = [1.0, 2.0, 40.0]


def planes_of(out: torch.Tensor) -> np.ndarray:
    """round(output * 255) as uint8, after checking it is within float noise of an integer."""
    scaled = out.double().numpy() * 255.0
    planes = np.rint(scaled)
    assert np.abs(scaled - planes).max() < 1e-3
    return planes.astype(np.uint8)


def assert_planes_equal(got: np.ndarray, want: np.ndarray) -> None:
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.max() == 0, f"max diff {diff.max()}, fraction {np.mean(diff > 0):.2e}"


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("grid", GRIDS, ids=str)
@pytest.mark.parametrize("size", SIZES, ids=str)
def test_random_images_match_opencv(rand, size, grid, clip):
    cfg = PreprocessConfig(clip_limit=clip, tile_grid=grid)
    b = rand(hash((size, grid)) % 1000, 1 if size[0] > 300 else 2, *size)
    out = preprocess(b, cfg, impl="numba")
    assert out.shape == (len(b), 6, *size) and out.dtype == torch.float32
    assert_planes_equal(planes_of(out), planes_ref(b, cfg))


@pytest.mark.parametrize("size", SIZES, ids=str)
def test_real_tiles_match_opencv(real_image, size):
    b = real_image(*size, n=2)
    for cfg in (PreprocessConfig(), PreprocessConfig(clip_limit=40.0, tile_grid=(3, 5))):
        assert_planes_equal(planes_of(preprocess(b, cfg, impl="numba")), planes_ref(b, cfg))


def test_a_batch_of_real_tiles_matches_opencv(real_tiles):
    b = real_tiles(16)
    for cfg in (PreprocessConfig(clip_limit=1.0), PreprocessConfig(tile_grid=(16, 16))):
        assert_planes_equal(planes_of(preprocess(b, cfg, impl="numba")), planes_ref(b, cfg))


@njit(cache=False)
def _rows_with_luts(img, luts, sdiv, table, exact, out):
    """Pass 2 alone over img[H, W, 3] with the given LUTs[3 * 256] (grid 1x1)."""
    h, w = img.shape[0], img.shape[1]
    xw = _x_weights(w, np.float32(1.0) / np.float32(w), 1)
    q = np.empty((3, w), dtype=np.int32)
    inv_th = np.float32(1.0) / np.float32(h)
    rows = img.reshape(h, w * 3)
    _rows(rows, luts, 0, h, xw, 1, 1, inv_th, sdiv, table, True, True, exact, q, out)


def test_colour_stage_matches_opencv_on_every_rgb_colour():
    """With identity LUTs the interpolation returns the pixel: S, Cr, Cb on all 2**24 colours."""
    luts = np.tile(np.arange(256, dtype=np.float32), 3)
    table = norm_table(6, None, None)
    out = np.empty((6, 1024, 1024), np.float32)
    for chunk in range(16):
        code = np.arange(chunk << 20, (chunk + 1) << 20, dtype=np.int64)
        img = np.stack([code >> 16, (code >> 8) & 255, code & 255], -1).astype(np.uint8)
        img = img.reshape(1024, 1024, 3)
        _rows_with_luts(img, luts, SDIV, table, chunk % 2 == 0, out)
        got = np.rint(out * 255).astype(np.uint8)
        assert np.array_equal(got[:3], img[..., ::-1].transpose(2, 0, 1))
        assert np.array_equal(got[3], cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[..., 1]), chunk
        crcb = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb)[..., 1:].transpose(2, 0, 1)
        assert np.array_equal(got[4:], crcb), f"Cr/Cb differ in chunk {chunk}"


@pytest.mark.parametrize(
    ("shape", "driver"),
    [
        ((1, 40, 56), "_serial"),
        ((3, 7, 9), "_serial"),
        ((1, 300, 300), "_two_pass"),
        ((8, 100, 100), "_two_pass"),
    ],
)
def test_every_driver_matches_opencv(rand, monkeypatch, shape, driver):
    """Inputs up to one 256x256 tile run serially, larger ones in parallel."""
    import numba

    from hvx.preprocess import _numba

    if numba.get_num_threads() < 2 and driver != "_serial":
        pytest.skip("one numba thread: everything runs serially")
    used = []
    real = getattr(_numba, driver)
    monkeypatch.setattr(_numba, driver, lambda *a: used.append(driver) or real(*a))
    b = rand(11, *shape)
    cfg = PreprocessConfig(tile_grid=(3, 5))
    assert_planes_equal(planes_of(preprocess(b, cfg, impl="numba")), planes_ref(b, cfg))
    assert used == [driver]


def test_float_output_equals_the_reference_exactly(rand):
    b = rand(3, 2, 33, 47)
    for cfg in (
        PreprocessConfig(),
        PreprocessConfig(mean=(0.5, 0.4, 0.3, 0.2, 0.5, 0.5), std=(0.2, 0.3, 0.1, 0.2, 0.05, 0.07)),
        PreprocessConfig(mode="rgb", mean=(0.7, 0.5, 0.6), std=(0.15, 0.2, 0.1)),
    ):
        got = preprocess(b, cfg, impl="numba")
        assert torch.equal(got, torch.from_numpy(preprocess_ref(b, cfg)))
        assert torch.equal(got, preprocess(b, cfg, impl="reference"))


def test_rgb_mode_is_plain_scaling(rand):
    b = rand(4, 2, 5, 6)
    out = preprocess(b, PreprocessConfig(mode="rgb"), impl="numba")
    assert torch.equal(out, torch.from_numpy(b.transpose(0, 3, 1, 2) / np.float32(255)))


def test_float16_within_one_ulp_of_the_exact_value(rand):
    b = rand(5, 1, 16, 16)
    cfg = PreprocessConfig(mean=(0.5,) * 6, std=(0.2,) * 6)
    got = preprocess(b, cfg, dtype=torch.float16, impl="numba")
    assert got.dtype == torch.float16
    exact = (planes_ref(b, cfg) / 255.0 - 0.5) / 0.2
    ulp = np.spacing(np.abs(got.numpy())).astype(np.float64)
    assert np.all(np.abs(got.numpy().astype(np.float64) - exact) <= ulp)
    assert torch.equal(got, preprocess(b, cfg, impl="reference").half())


def test_float_sdiv_equals_opencvs_table():
    """_colour6 computes SDIV[V] as cvRound(float32(255 << 12) / float32(V))."""
    v = np.arange(1, 256, dtype=np.float32)
    got = np.rint(np.float32(255 << 12) / v).astype(np.int32)  # rint: half to even
    assert np.array_equal(got, SDIV[1:])


def test_exact_tiles_are_powers_of_two_with_16_fraction_bits():
    assert _exact_tiles(32, 32) and _exact_tiles(1, 1) and _exact_tiles(256, 256)
    assert _exact_tiles(1024, 64) and not _exact_tiles(1024, 128)
    assert not _exact_tiles(32, 33) and not _exact_tiles(5, 5) and not _exact_tiles(96, 32)


@pytest.mark.parametrize("exact", [False, True])
def test_both_interpolations_match_opencv_on_power_of_two_tiles(real_tiles, monkeypatch, exact):
    """The fused (exact-tile) and OpenCV-order interpolations agree with OpenCV."""
    monkeypatch.setattr(_numba, "_exact_tiles", lambda tw, th: exact)
    b = real_tiles(4, start=5)
    for cfg in (PreprocessConfig(), PreprocessConfig(tile_grid=(4, 2), clip_limit=3.0)):
        assert_planes_equal(planes_of(preprocess(b, cfg, impl="numba")), planes_ref(b, cfg))
