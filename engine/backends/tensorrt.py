"""The TensorRT backend: runs a plan built by :func:`hvx.backends.plan.build_tensorrt_plan`.

Written against the TensorRT 10 Python API (``Runtime.deserialize_cuda_engine``,
``IExecutionContext.set_input_shape`` / ``set_tensor_address`` /
``execute_async_v3``) with torch owning the device memory and the stream.
TensorRT is not installable on the machines this was written on, so this module
has never run; the ``tensorrt`` tests exercise it where TensorRT exists.

The plan's sidecar is checked against this machine's GPU and TensorRT version
before any TensorRT call (:func:`hvx.backends.plan.load_plan`). One execution
context is not re-entrant: the Engine serialises calls to ``run``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hvx.backends.base import INPUT_NAME, OUTPUT_NAMES, HeadOutputs
from hvx.backends.plan import PlanTarget, load_plan

__all__ = ["TensorRTBackend"]

log = logging.getLogger(__name__)


class TensorRTBackend:
    """Runs a TensorRT plan on a CUDA GPU.

    Args:
        plan_path: The ``.plan`` file (its ``.plan.json`` sidecar beside it).
        device: CUDA device, ``"cuda"`` or ``"cuda:K"``.
        target: This machine's target (default: probed with ``PlanTarget.current``).

    Attributes:
        meta: The sidecar (settings, target, model facts).

    Raises:
        PlanMismatchError: If the plan was built for another GPU or TensorRT version.
        FileNotFoundError, ValueError: Missing or corrupt plan/sidecar.
        ImportError: Without TensorRT.
        RuntimeError: If TensorRT cannot deserialize the plan.
    """

    name = "tensorrt"

    def __init__(
        self,
        plan_path: str | os.PathLike,
        *,
        device: str = "cuda",
        target: PlanTarget | None = None,
    ) -> None:
        target = target or PlanTarget.current(device)
        plan, self.meta = load_plan(plan_path, target)  # rejects a mismatch first
        import tensorrt as trt
        import torch

        self._trt = trt
        self._torch = torch
        self.device = str(torch.device(device))
        self.plan_path = Path(plan_path)
        self.settings = self.meta["settings"]
        self.max_batch: int | None = int(self.settings.max_shape[0])
        self.precision = "fp16" if "fp16" in self.settings.precision else "fp32"
        self.input_dtype = torch.float32  # the export's I/O stays float32; fp16 is inside
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise RuntimeError(f"TensorRT could not deserialize {plan_path}; rebuild it")
            self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        if sorted(names) != sorted((INPUT_NAME, *OUTPUT_NAMES)):
            raise ValueError(
                f"expected plan tensors {[INPUT_NAME, *OUTPUT_NAMES]}, got {names} in {plan_path}"
            )
        self._out_dtypes = {
            n: getattr(torch, str(trt.nptype(self._engine.get_tensor_dtype(n))().dtype))
            for n in OUTPUT_NAMES
        }

    def run(self, x) -> HeadOutputs:
        """Runs the plan on ``x``.

        Args:
            x: ``Tensor[N, C, H, W]`` float32 (moved to ``device``), inside the plan's
                min/max profile.

        Returns:
            :class:`HeadOutputs` of CUDA tensors, ordered on the current stream.

        Raises:
            ValueError: If the shape is outside the plan's optimisation profile.
            RuntimeError: If TensorRT rejects the shape or the launch fails.
        """
        torch = self._torch
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(
                f"expected a (N, C, H, W) torch.Tensor, got {getattr(x, 'shape', type(x))}"
            )
        if not self.settings.accepts(tuple(x.shape)):
            s = self.settings
            raise ValueError(
                f"expected (N, H, W) between {s.min_shape} and {s.max_shape} (the plan's profile), "
                f"got {(x.shape[0], x.shape[2], x.shape[3])}; rebuild with a wider profile"
            )
        x = x.to(device=self.device, dtype=torch.float32).contiguous()
        ctx = self._context
        if not ctx.set_input_shape(INPUT_NAME, tuple(x.shape)):
            raise RuntimeError(f"TensorRT rejected input shape {tuple(x.shape)}")
        ctx.set_tensor_address(INPUT_NAME, x.data_ptr())
        outs = []
        for name in OUTPUT_NAMES:
            shape = tuple(ctx.get_tensor_shape(name))
            t = torch.empty(shape, dtype=self._out_dtypes[name], device=self.device)
            ctx.set_tensor_address(name, t.data_ptr())
            outs.append(t)
        stream = torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed; see the TensorRT log")
        return HeadOutputs(*outs)

    def __repr__(self) -> str:
        return f"TensorRTBackend({str(self.plan_path)!r}, device={self.device!r})"
