"""The oracle and the host-side constants every fast path shares."""

import cv2
import numpy as np
import pytest

from hvx.preprocess import PreprocessConfig
from hvx.preprocess._params import SDIV, ClaheGeometry, norm_table, reflect101
from hvx.preprocess.reference import clahe_rgb_ref, planes_ref, preprocess_ref


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_reflect101_matches_copymakeborder_for_any_pad(n):
    row = np.arange(n, dtype=np.uint8)[None, :]
    pad = 3 * n + 5  # longer than the row: OpenCV reflects again
    want = cv2.copyMakeBorder(row, 0, 0, 0, pad, cv2.BORDER_REFLECT_101)[0]
    assert np.array_equal(reflect101(np.arange(n + pad), n), want)


def test_geometry_pads_both_axes_like_opencv():
    # W = 300 is not a multiple of 8, H = 256 is: OpenCV still pads H by a full 8.
    g = ClaheGeometry.create(256, 300, (8, 8), 2.0)
    assert (g.tile_h, g.tile_w) == (33, 38)
    assert g.clip == int(2.0 * 33 * 38 / 256)
    assert g.lut_scale == np.float32(255.0) / np.float32(33 * 38)
    g = ClaheGeometry.create(256, 256, (8, 4), 0.01)
    assert (g.tile_h, g.tile_w, g.clip) == (64, 32, 1)


def test_sdiv_reproduces_opencv_saturation_on_every_max_min_pair():
    vmax, vmin = np.triu_indices(256)  # every (min <= max) pair
    vmax, vmin = vmin.astype(np.int64), vmax.astype(np.int64)
    vmax, vmin = np.maximum(vmax, vmin), np.minimum(vmax, vmin)
    img = np.stack([vmax, vmin, vmin], -1).astype(np.uint8)[None]
    want = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[0, :, 1]
    got = ((vmax - vmin) * SDIV[vmax] + 2048) >> 12
    assert np.array_equal(got, want)


def test_norm_table_is_the_formula_rounded_once():
    t = norm_table(6, None, None)
    assert t.dtype == np.float32 and t.shape == (6, 256)
    assert np.array_equal(t[2], (np.arange(256) / 255.0).astype(np.float32))
    t = norm_table(3, (0.5, 0.4, 0.3), (0.25, 0.5, 2.0))
    assert np.array_equal(t[1], ((np.arange(256) / 255.0 - 0.4) / 0.5).astype(np.float32))


def test_planes_ref_channel_order(rand):
    b = rand(0, 2, 20, 30)
    cfg = PreprocessConfig(clip_limit=3.0, tile_grid=(2, 3))
    p = planes_ref(b, cfg)
    rgb = clahe_rgb_ref(b[1], 3.0, (2, 3))
    assert p.shape == (2, 6, 20, 30) and p.dtype == np.uint8
    assert np.array_equal(p[1, :3], rgb[..., ::-1].transpose(2, 0, 1))
    assert np.array_equal(p[1, 3], cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1])
    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    assert np.array_equal(p[1, 4:], ycrcb[..., 1:].transpose(2, 0, 1))
    assert np.array_equal(planes_ref(b, PreprocessConfig(mode="rgb")), b.transpose(0, 3, 1, 2))


def test_preprocess_ref_scales_and_normalises(rand):
    b = rand(1, 1, 9, 11)
    cfg = PreprocessConfig(mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 1.0), mode="rgb")
    got = preprocess_ref(b, cfg)
    want = (b.transpose(0, 3, 1, 2) / 255.0 - np.array(cfg.mean)[:, None, None]) / np.array(
        cfg.std
    )[:, None, None]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
