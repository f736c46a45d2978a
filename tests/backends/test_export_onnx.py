import numpy as np
import pytest
import torch

from hvx.backends import HeadOutputs
from hvx.backends.export import export_onnx, validate_onnx
from hvx.backends.onnxruntime import OnnxRuntimeBackend
from hvx.backends.torch import TorchBackend


@pytest.fixture
def onnx_file(tmp_path, three_heads):
    return export_onnx(three_heads, tmp_path / "m.onnx", in_chans=6, example_size=32)


def test_export_is_checked_and_has_dynamic_axes(onnx_file):
    import onnx

    proto = onnx.load(str(onnx_file))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 6, "height", "width"]
    assert proto.opset_import[0].version == 17
    assert [o.name for o in proto.graph.output] == ["np_prob", "hv", "tp_prob"]


@pytest.mark.parametrize("shape", [(1, 6, 16, 24), (3, 6, 40, 8)])
def test_onnxruntime_matches_torch_fp32(onnx_file, three_heads, shape):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(3))
    ref = TorchBackend(three_heads).run(x).numpy()
    got = OnnxRuntimeBackend(onnx_file).run(x)
    for a, b in zip(
        (ref.np_prob, ref.hv, ref.tp_prob), (got.np_prob, got.hv, got.tp_prob), strict=True
    ):
        assert a.shape == b.shape
        assert np.abs(a - b).max() < 1e-4


def test_validate_reports_mismatch(onnx_file, make_three_heads):
    with pytest.raises(ValueError, match="expected ONNX Runtime within"):
        validate_onnx(onnx_file, make_three_heads(seed=1), in_chans=6)


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript")
def test_validate_rejects_foreign_graph(tmp_path):
    class One(torch.nn.Module):
        def forward(self, x):
            return x * 2

    path = tmp_path / "x.onnx"
    torch.onnx.export(One(), (torch.rand(1, 3, 8, 8),), str(path), dynamo=False, opset_version=17)
    with pytest.raises(ValueError, match="expected outputs"):
        validate_onnx(path, in_chans=3)
    with pytest.raises(ValueError, match="expected an hvx export"):
        OnnxRuntimeBackend(path)


def test_ort_backend_bad_input(onnx_file):
    b = OnnxRuntimeBackend(onnx_file)
    with pytest.raises(ValueError, match=r"expected a non-empty \(N, C, H, W\)"):
        b.run(np.zeros((6, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"expected providers"):
        OnnxRuntimeBackend(onnx_file, providers=["NoSuchExecutionProvider"])


def test_torch_backend_bad_input_and_precision(three_heads):
    b = TorchBackend(three_heads)
    assert (b.name, b.device, b.precision, b.input_dtype) == ("torch", "cpu", "fp32", torch.float32)
    with pytest.raises(TypeError, match=r"expected a torch\.Tensor"):
        b.run(np.zeros((1, 6, 8, 8), np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        b.run(torch.zeros(0, 6, 8, 8))
    with pytest.raises(ValueError, match="expected precision 'fp32' on the CPU"):
        TorchBackend(three_heads, precision="fp16")


def test_head_outputs_contract():
    h = HeadOutputs(np.zeros((2, 8, 9)), np.zeros((2, 2, 8, 9)), np.zeros((2, 5, 8, 9)))
    assert len(h) == 2 and h.num_types == 5 and h.spatial == (8, 9)
    c = h.crop(5, 7)
    assert (
        c.np_prob.shape == (2, 5, 7)
        and c.hv.shape == (2, 2, 5, 7)
        and c.tp_prob.shape[1:] == (5, 5, 7)
    )
    with pytest.raises(ValueError, match="expected every head"):
        HeadOutputs(np.zeros((2, 8, 9)), np.zeros((2, 2, 8, 8)), np.zeros((2, 5, 8, 9)))
    with pytest.raises(ValueError, match=r"expected np_prob \(N,H,W\)"):
        HeadOutputs(np.zeros((8, 9)), np.zeros((2, 2, 8, 9)), np.zeros((2, 5, 8, 9)))
    with pytest.raises(ValueError, match="expected a crop within"):
        h.crop(9, 9)
