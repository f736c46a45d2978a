"""Network backends: one interface, three runtimes (torch, ONNX Runtime, TensorRT).

Every backend turns a preprocessed float batch ``Tensor[N, C, H, W]`` into the
same :class:`HeadOutputs` (DESIGN §4). Backend modules import their runtime
lazily, so ``import hvx.backends`` costs nothing beyond numpy.

- :mod:`hvx.backends.torch`: :class:`~hvx.backends.torch.TorchBackend` (CPU fp32;
  CUDA fp16, channels_last, CUDA graphs for repeated batch shapes).
- :mod:`hvx.backends.onnxruntime`: :class:`~hvx.backends.onnxruntime.OnnxRuntimeBackend`.
- :mod:`hvx.backends.tensorrt`: :class:`~hvx.backends.tensorrt.TensorRTBackend`
  (loads a plan built by :func:`hvx.backends.plan.build_tensorrt_plan`).
- :mod:`hvx.backends.export`: ONNX export + validation, and its cache key.
- :mod:`hvx.backends.plan`: TensorRT plan settings, cache key, files and build.
- :mod:`hvx.backends.quantize`: int8 / bf16 CPU runners and their accuracy gate.
"""

from hvx.backends.base import BACKEND_NAMES, Backend, HeadOutputs

__all__ = ["BACKEND_NAMES", "Backend", "HeadOutputs"]
