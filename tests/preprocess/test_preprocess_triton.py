"""Triton kernel pair == OpenCV, bit for bit; on CUDA or under TRITON_INTERPRET=1.

The interpreter's cost is per program launched (one per image here), so the
CPU cases are fewer and larger than numba's; the ``cuda`` tests rerun the grid
on a GPU.
"""

import os

import numpy as np
import pytest
import torch

pytest.importorskip("triton")
if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton needs a CUDA GPU or TRITON_INTERPRET=1", allow_module_level=True)

import cv2

from hvx.preprocess import PreprocessConfig, preprocess
from hvx.preprocess import _triton as tri
from hvx.preprocess._params import SDIV, norm_table
from hvx.preprocess.reference import planes_ref, preprocess_ref

DEV = "cuda" if torch.cuda.is_available() else "cpu"

CASES = [  # (H, W), grid, clip: every size, grid and clip of the numba tests at least once
    ((1, 1), (8, 8), 2.0),
    ((7, 300), (3, 5), 40.0),
    ((255, 257), (8, 8), 1.0),
    ((256, 256), (16, 16), 2.0),
    ((256, 256), (8, 8), 40.0),
    ((100, 90), (1, 1), 2.0),
    ((1024, 768), (8, 8), 2.0),
]


def planes_of(out: torch.Tensor) -> np.ndarray:
    scaled = out.double().cpu().numpy() * 255.0
    planes = np.rint(scaled)
    assert np.abs(scaled - planes).max() < 1e-3
    return planes.astype(np.uint8)


def assert_planes_equal(got: np.ndarray, want: np.ndarray) -> None:
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.max() == 0, f"max diff {diff.max()}, fraction {np.mean(diff > 0):.2e}"


@pytest.mark.parametrize(("size", "grid", "clip"), CASES, ids=str)
def test_random_images_match_opencv(rand, size, grid, clip):
    cfg = PreprocessConfig(clip_limit=clip, tile_grid=grid)
    b = rand(sum(size), 1 if size[0] > 300 else 2, *size)
    out = preprocess(b, cfg, device=DEV, dtype=torch.float32, impl="triton")
    assert out.shape == (len(b), 6, *size) and out.device.type == DEV
    assert_planes_equal(planes_of(out), planes_ref(b, cfg))


def test_real_tiles_match_opencv(real_tiles, real_image):
    b = real_tiles(4)
    for cfg in (PreprocessConfig(), PreprocessConfig(clip_limit=1.0, tile_grid=(3, 5))):
        out = preprocess(b, cfg, device=DEV, dtype=torch.float32, impl="triton")
        assert_planes_equal(planes_of(out), planes_ref(b, cfg))
    for size in ((7, 300), (255, 257)):
        b = real_image(*size)
        out = preprocess(b, device=DEV, dtype=torch.float32, impl="triton")
        assert_planes_equal(planes_of(out), planes_ref(b, PreprocessConfig()))


@pytest.mark.slow
def test_a_large_real_image_matches_opencv(real_image):
    b = real_image(1024, 768)
    cfg = PreprocessConfig(clip_limit=40.0, tile_grid=(16, 16))
    out = preprocess(b, cfg, device=DEV, dtype=torch.float32, impl="triton")
    assert_planes_equal(planes_of(out), planes_ref(b, cfg))


def test_colour_stage_matches_opencv_on_random_colours():
    """Identity LUTs: the apply kernel's S, Cr, Cb equal cvtColor's on 2**18 colours."""
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (1, 256, 1024, 3), dtype=np.uint8)
    img[0, 0, :256] = np.arange(256)[:, None]  # greys, incl. V = 0
    img[0, 1, :256, 0] = 255  # saturated reds
    x = torch.from_numpy(img).to(DEV)
    lut = torch.arange(256, dtype=torch.uint8, device=DEV).repeat(1, 3, 1, 1)
    table = torch.from_numpy(norm_table(6, None, None)).to(DEV)
    out = torch.empty((1, 6, 256, 1024), dtype=torch.float32, device=DEV)
    sdiv = torch.from_numpy(SDIV).to(DEV)
    tri._launch_apply(x, lut, table, sdiv, out, 1, 1, 1 / 1024, 1 / 256, True)
    got = planes_of(out)[0]
    assert np.array_equal(got[3], cv2.cvtColor(img[0], cv2.COLOR_RGB2HSV)[..., 1])
    want = cv2.cvtColor(img[0], cv2.COLOR_RGB2YCrCb)[..., 1:].transpose(2, 0, 1)
    assert np.array_equal(got[4:], want)


def test_normalised_output_equals_the_reference_exactly(rand):
    b = rand(3, 2, 33, 47)
    for cfg in (
        PreprocessConfig(mean=(0.5, 0.4, 0.3, 0.2, 0.5, 0.5), std=(0.2, 0.3, 0.1, 0.2, 0.05, 0.07)),
        PreprocessConfig(mode="rgb", mean=(0.7, 0.5, 0.6), std=(0.15, 0.2, 0.1)),
        PreprocessConfig(mode="rgb"),
    ):
        got = preprocess(b, cfg, device=DEV, dtype=torch.float32, impl="triton")
        assert torch.equal(got.cpu(), torch.from_numpy(preprocess_ref(b, cfg)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_outputs_are_the_float32_result_rounded_once(rand, dtype):
    b = rand(4, 2, 20, 24)
    cfg = PreprocessConfig(mean=(0.5,) * 6, std=(0.2,) * 6)
    got = preprocess(b, cfg, device=DEV, dtype=dtype, impl="triton")
    assert got.dtype == dtype
    assert torch.equal(got.cpu(), torch.from_numpy(preprocess_ref(b, cfg)).to(dtype))


def test_any_input_strides_are_read_correctly(rand):
    b = rand(5, 2, 30, 40)
    want = planes_ref(b, PreprocessConfig())
    nchw = torch.from_numpy(np.ascontiguousarray(b.transpose(0, 3, 1, 2))).to(DEV)
    big = torch.zeros((2, 60, 120, 4), dtype=torch.uint8, device=DEV)
    big[:, ::2, ::3, 1:] = torch.from_numpy(b).to(DEV)
    views = [
        nchw.permute(0, 2, 3, 1),  # channels-last view of a planar buffer
        big[:, ::2, ::3, 1:],  # strided crop of a 4-channel buffer
    ]
    for x in views:
        assert not x.is_contiguous()
        out = preprocess(x, device=DEV, dtype=torch.float32, impl="triton")
        assert_planes_equal(planes_of(out), want)


def test_is_a_registered_torch_op(rand):
    b = torch.from_numpy(rand(6, 1, 8, 8)).to(DEV)
    table = torch.from_numpy(norm_table(3, None, None)).to(DEV)
    sdiv = torch.from_numpy(SDIV).to(DEV)
    args = (b, table, sdiv, 1, 1, 8, 8, 1, 1.0, 0.125, 0.125, False, torch.float32)
    out = torch.ops.hvx.clahe_stack(*args)
    assert torch.equal(out.cpu(), b.cpu().permute(0, 3, 1, 2) / np.float32(255))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")
def test_cpu_without_the_interpreter_is_refused(monkeypatch, rand):
    monkeypatch.setattr(tri, "interpreted", lambda: False)
    with pytest.raises(RuntimeError, match=r"impl='triton' on device cpu needs a CUDA device"):
        preprocess(rand(0, 1, 4, 4), impl="triton")


# ----------------------------------------------------------------------------- GPU only


@pytest.mark.cuda
@pytest.mark.parametrize("size", [(1, 1), (7, 300), (255, 257), (256, 256), (1024, 768)], ids=str)
def test_cuda_matches_opencv_on_the_full_grid(rand, size):
    for grid in ((8, 8), (3, 5), (1, 1), (16, 16)):
        for clip in (1.0, 2.0, 40.0):
            cfg = PreprocessConfig(clip_limit=clip, tile_grid=grid)
            b = rand(hash((size, grid)) % 1000, 2, *size)
            out = preprocess(b, cfg, device="cuda", dtype=torch.float32)
            assert_planes_equal(planes_of(out), planes_ref(b, cfg))


@pytest.mark.cuda
def test_cuda_defaults_to_float16_and_matches_the_reference(real_tiles):
    b = torch.from_numpy(real_tiles(64)).cuda()
    out = preprocess(b)
    assert out.dtype == torch.float16 and out.is_cuda
    want = torch.from_numpy(preprocess_ref(b.cpu().numpy(), PreprocessConfig())).half()
    assert torch.equal(out.cpu(), want)


@pytest.mark.cuda
def test_cuda_op_composes_with_torch_compile_and_cuda_graphs(rand):
    from hvx.preprocess._params import ClaheGeometry

    b = torch.from_numpy(rand(8, 4, 64, 64)).cuda()
    geo = ClaheGeometry.create(64, 64, (8, 8), 2.0)
    table = torch.from_numpy(norm_table(6, None, None)).cuda()
    sdiv = torch.from_numpy(SDIV).cuda()
    scalars = (8, 8, geo.tile_w, geo.tile_h, geo.clip, float(geo.lut_scale))
    scalars += (float(geo.inv_tw), float(geo.inv_th), True, torch.float16)

    def op(x):
        return torch.ops.hvx.clahe_stack(x, table, sdiv, *scalars)

    want = preprocess(b)
    assert torch.equal(op(b), want)
    assert torch.equal(torch.compile(op, fullgraph=True)(b), want)
    static_in = b.clone()
    preprocess(static_in)  # warm up: kernels compiled, device tables cached
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = preprocess(static_in)
    static_in.copy_(torch.flip(b, dims=[2]))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(static_out, preprocess(static_in))
