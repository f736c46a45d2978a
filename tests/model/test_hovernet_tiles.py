"""The official tile-mode geometry (reflect padding, windows, assembly), without a network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hvx.backends.base import HeadOutputs
from hvx.model.hovernet_tiles import fit_window, reflect_index, run_valid, window_grid


@pytest.mark.parametrize("n", [1, 2, 3, 7, 50])
@pytest.mark.parametrize("before,after", [(0, 0), (1, 2), (46, 46), (95, 300)])
def test_reflect_index_is_numpy_reflect(n, before, after):
    ref = np.pad(np.arange(n), (before, after), mode="reflect")
    np.testing.assert_array_equal(reflect_index(n, -before, n + before + after), ref)


def _official_patches(img: np.ndarray, window: int, output: int) -> tuple[list, int, int]:
    """Windows as the official _prepare_patching cuts them (written from its description)."""
    h, w = img.shape[:2]
    lh = (math.ceil((h - output) / output) + 1) * output
    lw = (math.ceil((w - output) / output) + 1) * output
    pt = (window - output) // 2
    pad = np.pad(img, ((pt, lh + window - h), (pt, lw + window - w)), mode="reflect")
    ys, xs = range(0, lh, output), range(0, lw, output)
    return [pad[y : y + window, x : x + window] for y in ys for x in xs], len(ys), len(xs)


def _fake_net(window: int, output: int):
    """np = centred crop of the window + 1e-3 * window sum (all window pixels matter)."""
    c = (window - output) // 2

    def run(x: torch.Tensor) -> HeadOutputs:
        assert tuple(x.shape[1:]) == (1, window, window)
        crop = x[:, 0, c : c + output, c : c + output]
        np_prob = crop + 1e-3 * x.sum(dim=(1, 2, 3))[:, None, None]
        hv = torch.stack([crop, -crop], 1)
        tp = torch.stack([crop, 2 * crop, 3 * crop], 1)
        return HeadOutputs(np_prob, hv, tp)

    return run


@pytest.mark.parametrize(
    "h,w", [(1, 1), (5, 3), (80, 80), (81, 79), (164, 164), (165, 300), (333, 401)]
)
@pytest.mark.parametrize("window,output", [(256, 164), (270, 80)])
def test_run_valid_matches_official_patching(h, w, window, output):
    rng = np.random.default_rng(h * 1000 + w)
    img = rng.random((h, w)).astype(np.float32)
    x = torch.from_numpy(img)[None, None]
    got = run_valid(_fake_net(window, output), x, window, output, batch=3)
    # the centred crops tile the image exactly: the np head minus the window-sum term,
    # hv and tp equal the image itself
    np.testing.assert_array_equal(got.hv[0, 0].numpy(), img)
    np.testing.assert_array_equal(got.tp_prob[0, 2].numpy(), 3 * img)
    # the window-sum term checks every padded pixel each window reads
    patches, rows, cols = _official_patches(img, window, output)
    assert window_grid(h, w, output) == (rows, cols)
    sums = np.array([p.sum(dtype=np.float64) for p in patches]).reshape(rows, cols)
    want = np.kron(sums, np.ones((output, output)))[:h, :w] * 1e-3 + img
    np.testing.assert_allclose(got.np_prob[0].numpy(), want, rtol=1e-5, atol=1e-4)


def test_run_valid_batches_images_and_numpy_heads():
    """Several images, windows split across calls, numpy heads (ONNX Runtime) all assemble."""
    x = torch.rand(3, 1, 100, 130)
    calls = []

    def run(t):
        calls.append(len(t))
        crop = t[:, 0, 10:30, 10:30].numpy()
        return HeadOutputs(crop, np.stack([crop, crop], 1), np.stack([crop, crop], 1))

    got = run_valid(run, x, 40, 20, batch=4)
    assert isinstance(got.np_prob, np.ndarray)
    np.testing.assert_array_equal(got.np_prob, x[:, 0].numpy())
    assert sum(calls) == 3 * 5 * 7 and max(calls) == 4


def test_run_valid_rejects_a_wrong_network_and_bad_sizes():
    x = torch.rand(1, 1, 50, 50)

    def wrong(t):
        z = t[:, 0, :10, :10]
        return HeadOutputs(z, torch.stack([z, z], 1), torch.stack([z, z], 1))

    with pytest.raises(ValueError, match="expected 1 outputs of 20x20"):
        run_valid(wrong, x, 40, 20, batch=1)
    with pytest.raises(ValueError, match="window - output even"):
        run_valid(wrong, x, 41, 20)


def test_fit_window_pads_and_crops_centred():
    x = torch.arange(10.0).reshape(1, 1, 1, 10).expand(1, 1, 10, 10)
    assert fit_window(x, 6)[0, 0, 0].tolist() == [2, 3, 4, 5, 6, 7]
    assert fit_window(x, 14)[0, 0, 0].tolist() == [2, 1, *range(10), 8, 7]
