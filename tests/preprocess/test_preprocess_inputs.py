"""The façade: input validation, layouts, dispatch, output device and dtype."""

import os

import numpy as np
import pytest
import torch

from hvx.preprocess import IMPLS, PreprocessConfig, preprocess
from hvx.preprocess.reference import preprocess_ref

OK = np.zeros((2, 8, 8, 3), np.uint8)


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        (
            OK.astype(np.float32),
            r"expected uint8 RGB .* got dtype float32 \(shape \(2, 8, 8, 3\)\)",
        ),
        (OK.astype(np.int16), r"expected uint8 RGB .* got dtype int16"),
        (torch.zeros((2, 8, 8, 3)), r"expected uint8 RGB .* got dtype torch.float32"),
        (OK.astype(bool), r"got dtype bool"),
        (np.zeros((2, 8, 8, 1), np.uint8), r"got shape \(2, 8, 8, 1\) \(1 channels\)$"),
        (np.zeros((2, 8, 8, 2), np.uint8), r"got shape \(2, 8, 8, 2\) \(2 channels\)"),
        (np.zeros((2, 8, 8, 4), np.uint8), r"got shape \(2, 8, 8, 4\) \(4 channels\)"),
        (np.zeros((8, 8), np.uint8), r"expected uint8 RGB .* got shape \(8, 8\)"),
        (np.zeros((1, 2, 8, 8, 3), np.uint8), r"got shape \(1, 2, 8, 8, 3\)"),
        (
            np.zeros((0, 8, 8, 3), np.uint8),
            r"expected a non-empty batch.* got shape \(0, 8, 8, 3\)",
        ),
        (np.zeros((2, 0, 8, 3), np.uint8), r"expected H, W >= 1.* got shape \(2, 0, 8, 3\)"),
        (np.zeros((8, 0, 3), np.uint8), r"expected H, W >= 1.* got shape \(8, 0, 3\)"),
    ],
    ids=lambda v: getattr(v, "dtype", v) if not isinstance(v, str) else "",
)
@pytest.mark.parametrize("impl", ["auto", "numba", "reference"])
def test_bad_inputs_raise_value_error(batch, match, impl):
    with pytest.raises(ValueError, match=match):
        preprocess(batch, impl=impl)


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (3, 64, 64), (1, 3, 8, 300)], ids=str)
def test_channels_first_is_rejected_with_a_hint(shape):
    with pytest.raises(ValueError, match=r"channels-first: move channels last, e.g. x.permute"):
        preprocess(np.zeros(shape, np.uint8))
    with pytest.raises(ValueError, match=r"channels-first"):
        preprocess(torch.zeros(shape, dtype=torch.uint8))


def test_only_the_last_axis_is_read_as_rgb(rand):
    """(3, H, W, 3) is three channels-last images, never one channels-first image."""
    b = rand(1, 3, 5, 3)  # N=3, H=5, W=3, C=3: every axis but H could be "channels"
    out = preprocess(b, PreprocessConfig(mode="rgb"))
    assert out.shape == (3, 3, 5, 3)
    assert torch.equal(out[2, 0], torch.from_numpy(b[2, :, :, 0] / np.float32(255)))
    single = preprocess(b[1], PreprocessConfig(mode="rgb"))
    assert torch.equal(single, out[1:2])


def test_non_array_and_bad_arguments():
    with pytest.raises(
        TypeError, match=r"expected a numpy array or torch tensor.*got <class 'list'>"
    ):
        preprocess([[[0, 0, 0]]])
    with pytest.raises(TypeError, match=r"expected config as a PreprocessConfig, got dict"):
        preprocess(OK, {"clip_limit": 2.0})
    with pytest.raises(ValueError, match=r"expected impl in \('auto', .*\), got 'opencv'"):
        preprocess(OK, impl="opencv")
    with pytest.raises(ValueError, match=r"expected dtype in .*, got torch.int32"):
        preprocess(OK, dtype=torch.int32)


@pytest.mark.parametrize("impl", IMPLS)
def test_non_contiguous_and_read_only_inputs_give_the_contiguous_result(rand, impl):
    if impl == "triton":
        pytest.importorskip("triton")
        if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")
    base = rand(2, 2, 24, 34)
    want = torch.from_numpy(
        preprocess_ref(np.ascontiguousarray(base[:, 2:22:2, 1:33:3]), PreprocessConfig())
    )
    view = base[:, 2:22:2, 1:33:3]
    assert not view.flags.c_contiguous
    ro = np.ascontiguousarray(view)
    ro.setflags(write=False)
    flipped = np.ascontiguousarray(view[:, ::-1])[:, ::-1]  # negative strides
    strided = torch.from_numpy(base)[:, 2:22:2, 1:33:3]
    assert not strided.is_contiguous()
    for x in (view, ro, flipped, strided):
        device = "cuda" if impl == "triton" and torch.cuda.is_available() else "cpu"
        out = preprocess(x, impl=impl, device=device, dtype=torch.float32)
        assert torch.equal(out.cpu(), want)


def test_single_image_is_a_batch_of_one(rand):
    b = rand(3, 1, 10, 12)
    assert torch.equal(preprocess(b[0]), preprocess(b))


def test_defaults_cpu_float32_and_auto_is_numba(rand):
    b = rand(4, 1, 10, 12)
    out = preprocess(torch.from_numpy(b))
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.equal(out, preprocess(b, impl="numba"))
    assert torch.equal(preprocess(b, dtype=torch.float16), out.half())


@pytest.mark.cuda
def test_cuda_device_defaults(rand):
    b = rand(5, 2, 10, 12)
    out = preprocess(b, device="cuda")
    assert out.is_cuda and out.dtype == torch.float16
    cpu = preprocess(torch.from_numpy(b).cuda(), device="cpu")
    assert cpu.device.type == "cpu" and cpu.dtype == torch.float32
    assert torch.equal(out.cpu(), cpu.half())
    assert torch.equal(preprocess(b, device="cuda", impl="numba").cpu(), cpu.half())
