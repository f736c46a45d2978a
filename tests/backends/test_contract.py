"""The backend contract: one set of ONNX names, and ``max_batch`` on every runner."""

import dataclasses

import numpy as np
import onnx
import torch

from hvx.backends.base import INPUT_NAME, OUTPUT_NAMES, Backend, HeadOutputs
from hvx.backends.export import export_onnx


def test_output_names_are_the_head_fields():
    assert tuple(f.name for f in dataclasses.fields(HeadOutputs)) == OUTPUT_NAMES


def test_export_uses_the_contract_names(three_heads, tmp_path):
    path = export_onnx(three_heads, tmp_path / "m.onnx", in_chans=6, validate=False)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == [INPUT_NAME]
    assert tuple(o.name for o in graph.output) == OUTPUT_NAMES


def test_every_cpu_runner_has_max_batch_none(three_heads, tmp_path):
    """torch, ONNX Runtime (fp32 and int8 share the class) and bf16 take any N."""
    from hvx.backends.cpu_bf16 import CpuBf16Backend
    from hvx.backends.onnxruntime import OnnxRuntimeBackend
    from hvx.backends.torch import TorchBackend

    path = export_onnx(three_heads, tmp_path / "m.onnx", in_chans=6, validate=False)
    runners = [
        TorchBackend(three_heads),
        OnnxRuntimeBackend(path),
        OnnxRuntimeBackend(path, precision="int8"),
        CpuBf16Backend(three_heads),
    ]
    for runner in runners:
        assert isinstance(runner, Backend), runner
        assert runner.max_batch is None, runner
    x = torch.rand(3, 6, 16, 16)
    assert len(runners[0].run(x)) == 3 and len(runners[1].run(x.numpy())) == 3


def test_protocol_requires_max_batch():
    class NoMaxBatch:
        name, device, input_dtype, precision = "torch", "cpu", torch.float32, "fp32"

        def run(self, x):
            return HeadOutputs(np.zeros((1, 2, 2)), np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2, 2)))

    assert not isinstance(NoMaxBatch(), Backend)
    NoMaxBatch.max_batch = 4
    assert isinstance(NoMaxBatch(), Backend)
