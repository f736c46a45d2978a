"""The torch backend: CPU fp32, or CUDA fp16 + channels_last + CUDA graphs.

On CUDA, the first call of a new input shape runs eagerly (cuDNN picks its
algorithms); the second call of the same shape captures a CUDA graph, which
later calls of that shape replay (one launch per batch instead of hundreds).
Graphs are kept for the ``max_graphs`` most recent shapes. ``run`` is not
re-entrant on CUDA (the graphs own static buffers): the Engine serialises calls.
"""

from __future__ import annotations

import collections
import logging

import torch

from hvx.backends.base import HeadOutputs
from hvx.model import HoVerNetInference

__all__ = ["TorchBackend"]

log = logging.getLogger(__name__)

_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class _Graph:
    """One captured CUDA graph with its static input and outputs."""

    def __init__(self, module: torch.nn.Module, x: torch.Tensor) -> None:
        self.static_in = x.clone()
        stream = torch.cuda.Stream(device=x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(stream):  # warm-up outside the capture, as PyTorch requires
            module(self.static_in)
        torch.cuda.current_stream(x.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = module(self.static_in)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.static_in.copy_(x)
        self.graph.replay()
        # The next replay overwrites static_out: hand out copies.
        return tuple(t.clone() for t in self.static_out)


class TorchBackend:
    """Runs a ``HoVerNetInference``-style module (returns np_prob, hv, tp_prob) in torch.

    Args:
        module: ``nn.Module`` whose ``forward(x)`` returns the tuple
            ``(np_prob [N,H,W], hv [N,2,H,W], tp_prob [N,C,H,W])``
            (``hvx.model.HoVerNetInference``).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:K"``.
        precision: ``"fp32"`` (default on CPU), ``"fp16"`` (default on CUDA) or ``"bf16"``;
            fp16 is refused on the CPU (slow and inexact there).
        cuda_graphs: Capture CUDA graphs for shapes seen twice (CUDA only).
        max_graphs: Number of shapes whose graphs are kept (least recently used dropped).

    Raises:
        ValueError: For an unknown precision, fp16/bf16 on the CPU, or a CUDA device
            without CUDA.
    """

    name = "torch"
    max_batch: int | None = None

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        device: str | torch.device = "cpu",
        precision: str | None = None,
        cuda_graphs: bool = True,
        max_graphs: int = 8,
    ) -> None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"expected a CUDA device to be available for device={device!r}")
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"expected device 'cpu' or 'cuda[:K]', got {device!r}")
        precision = precision or ("fp16" if dev.type == "cuda" else "fp32")
        if precision not in _PRECISIONS:
            raise ValueError(f"expected precision in {sorted(_PRECISIONS)}, got {precision!r}")
        if dev.type == "cpu" and precision != "fp32":
            raise ValueError(f"expected precision 'fp32' on the CPU, got {precision!r}")
        self.device = str(dev)
        self.precision = precision
        self.input_dtype = _PRECISIONS[precision]
        self._channels_last = dev.type == "cuda"
        module = module.eval().to(device=dev, dtype=self.input_dtype)
        if self._channels_last:
            module = module.to(memory_format=torch.channels_last)
        for p in module.parameters():
            p.requires_grad_(False)
        self.module = module
        self._use_graphs = cuda_graphs and dev.type == "cuda"
        self._max_graphs = max_graphs
        self._graphs: collections.OrderedDict[tuple, _Graph] = collections.OrderedDict()
        self._seen: collections.Counter[tuple] = collections.Counter()

    @classmethod
    def from_model(cls, model: torch.nn.Module, **kwargs) -> TorchBackend:
        """Wraps a training ``hvx.model.HoVerNet`` (logits) in ``HoVerNetInference`` first."""
        return cls(HoVerNetInference(model), **kwargs)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self._use_graphs:
            return self.module(x)
        key = (tuple(x.shape), x.dtype)
        graph = self._graphs.get(key)
        if graph is not None:
            self._graphs.move_to_end(key)
            return graph(x)
        self._seen[key] += 1
        if self._seen[key] < 2:  # first time: eager (lets cuDNN autotune)
            return self.module(x)
        graph = _Graph(self.module, x)
        self._graphs[key] = graph
        log.debug("captured a CUDA graph for input %s", key)
        while len(self._graphs) > self._max_graphs:
            self._graphs.popitem(last=False)
        return graph(x)

    def run(self, x: torch.Tensor) -> HeadOutputs:
        """Runs the network on ``x``.

        Args:
            x: ``Tensor[N, C, H, W]`` float on (or movable to) ``device``.

        Returns:
            :class:`HeadOutputs` of torch tensors on ``device``, in ``input_dtype``.

        Raises:
            TypeError: If ``x`` is not a torch tensor.
            ValueError: If ``x`` is not 4-D or empty.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[0] == 0:
            raise ValueError(f"expected a non-empty (N, C, H, W) tensor, got {tuple(x.shape)}")
        x = x.to(device=self.device, dtype=self.input_dtype, non_blocking=True)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            np_prob, hv, tp_prob = self._forward(x)
        return HeadOutputs(np_prob, hv, tp_prob)

    def __repr__(self) -> str:
        return f"TorchBackend(device={self.device!r}, precision={self.precision!r})"
