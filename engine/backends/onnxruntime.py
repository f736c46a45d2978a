"""The ONNX Runtime backend: runs the exported graph (softmax inside) on the CPU.

``InferenceSession.run`` is thread-safe, so one session serves every thread.
CUDA/TensorRT execution providers are used when asked for and installed, with
host copies in and out (the torch and TensorRT backends are the GPU paths).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hvx.backends.base import INPUT_NAME, OUTPUT_NAMES, HeadOutputs

__all__ = ["OnnxRuntimeBackend"]


class OnnxRuntimeBackend:
    """Runs an hvx ONNX export with ONNX Runtime.

    Args:
        model: Path to the ``.onnx`` file, or its serialized bytes.
        providers: Execution providers in order of preference; default CPU only.
        threads: Intra-op threads (default: ONNX Runtime's choice, all cores); when
            given, inter-op threads are 1 so the session never uses more.
        precision: What the graph computes in, for the record: "fp32" for an hvx
            export, "int8" for its quantized twin (``hvx.backends.quantize``).

    Raises:
        ImportError: If onnxruntime is not installed (``pip install hvx[onnx]``).
        ValueError: If the graph's inputs/outputs are not hvx's
            (``input`` -> ``np_prob``, ``hv``, ``tp_prob``) or a provider is unavailable.
    """

    name = "onnxruntime"
    precision = "fp32"
    max_batch: int | None = None

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        *,
        providers: list[str] | None = None,
        threads: int | None = None,
        precision: str = "fp32",
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError(
                "the onnxruntime backend needs onnxruntime: pip install 'hvx[onnx]'"
            ) from err
        import torch

        providers = providers or ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise ValueError(
                f"expected providers from {ort.get_available_providers()}, got {missing}"
            )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        if precision not in ("fp32", "int8"):
            raise ValueError(f"expected precision 'fp32' or 'int8', got {precision!r}")
        self.precision = precision
        src = model if isinstance(model, bytes) else str(Path(model))
        self.session = ort.InferenceSession(src, sess_options=opts, providers=providers)
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or tuple(outputs) != OUTPUT_NAMES:
            raise ValueError(
                f"expected an hvx export with inputs ['{INPUT_NAME}'] and outputs "
                f"{list(OUTPUT_NAMES)}, got {inputs} and {outputs}"
            )
        self.providers = self.session.get_providers()
        self.device = "cpu"
        self.input_dtype = torch.float32

    def run(self, x) -> HeadOutputs:
        """Runs the graph.

        Args:
            x: ``Tensor[N, C, H, W]`` float32 (torch, any device) or ndarray.

        Returns:
            :class:`HeadOutputs` of float32 numpy arrays.

        Raises:
            ValueError: If ``x`` is not a non-empty 4-D array.
        """
        if hasattr(x, "detach"):
            x = x.detach().to("cpu").float().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[0] == 0:
            raise ValueError(f"expected a non-empty (N, C, H, W) array, got {x.shape}")
        np_prob, hv, tp_prob = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return HeadOutputs(np_prob, hv, tp_prob)

    def __repr__(self) -> str:
        return f"OnnxRuntimeBackend(providers={self.providers}, precision={self.precision!r})"
