"""The contract every backend implements: ``run(x) -> HeadOutputs`` (DESIGN §4).

Kept free of torch/onnxruntime/tensorrt imports so that reading it (and
``import hvx``) stays cheap; the arrays inside :class:`HeadOutputs` may be torch
tensors (on any device) or numpy arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

__all__ = ["BACKEND_NAMES", "INPUT_NAME", "OUTPUT_NAMES", "Backend", "HeadOutputs", "to_numpy"]

#: Names accepted by ``Engine.load(backend=...)`` and ``hvx infer --backend``.
BACKEND_NAMES = ("torch", "onnxruntime", "tensorrt")
#: The one name of the network input in every hvx ONNX export and TensorRT plan.
INPUT_NAME = "input"
#: The graph outputs, in order: the fields of :class:`HeadOutputs` (a test checks it).
OUTPUT_NAMES = ("np_prob", "hv", "tp_prob")


def _shape(a: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in a.shape)


def to_numpy(a: Any):
    """Returns ``a`` (torch tensor on any device, or array-like) as a float32 ndarray."""
    import numpy as np

    if hasattr(a, "detach"):  # torch.Tensor without importing torch here
        a = a.detach().float().cpu().numpy()
    return np.ascontiguousarray(a, dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class HeadOutputs:
    """The network's three heads, as probabilities, in one layout for every backend.

    Attributes:
        np_prob: ``[N, H, W]`` float, foreground probability (softmax of the np head, class 1).
        hv: ``[N, 2, H, W]`` float, channel 0 horizontal, 1 vertical distance, in [-1, 1].
        tp_prob: ``[N, C, H, W]`` float, softmax over C types including background (type 0).

    The arrays are torch tensors (they stay on the backend's device until
    post-processing needs them) or numpy arrays (ONNX Runtime).

    Raises:
        ValueError: If ranks or the N, H, W of the three heads disagree.
    """

    np_prob: Any
    hv: Any
    tp_prob: Any

    def __post_init__(self) -> None:
        np_s, hv_s, tp_s = _shape(self.np_prob), _shape(self.hv), _shape(self.tp_prob)
        if len(np_s) != 3 or len(hv_s) != 4 or len(tp_s) != 4 or hv_s[1] != 2:
            raise ValueError(
                "expected np_prob (N,H,W), hv (N,2,H,W), tp_prob (N,C,H,W), "
                f"got {np_s}, {hv_s}, {tp_s}"
            )
        n, h, w = np_s
        if (hv_s[0], *hv_s[2:]) != (n, h, w) or (tp_s[0], *tp_s[2:]) != (n, h, w):
            raise ValueError(
                f"expected every head with N,H,W = {(n, h, w)}, got hv {hv_s} and tp_prob {tp_s}"
            )

    def __len__(self) -> int:
        return _shape(self.np_prob)[0]

    @property
    def num_types(self) -> int:
        """C, the number of type channels (background included)."""
        return _shape(self.tp_prob)[1]

    @property
    def spatial(self) -> tuple[int, int]:
        """(H, W) of the heads."""
        return _shape(self.np_prob)[1:]  # type: ignore[return-value]

    def crop(self, height: int, width: int) -> HeadOutputs:
        """Returns the top-left ``height`` x ``width`` window (undoes the Engine's padding).

        Raises:
            ValueError: If the window is larger than the heads.
        """
        h, w = self.spatial
        if not (0 < height <= h and 0 < width <= w):
            raise ValueError(f"expected a crop within (1..{h}, 1..{w}), got ({height}, {width})")
        if (height, width) == (h, w):
            return self
        return HeadOutputs(
            self.np_prob[:, :height, :width],
            self.hv[:, :, :height, :width],
            self.tp_prob[:, :, :height, :width],
        )

    def numpy(self) -> HeadOutputs:
        """Returns a copy with contiguous float32 numpy arrays (synchronises a device)."""
        return HeadOutputs(to_numpy(self.np_prob), to_numpy(self.hv), to_numpy(self.tp_prob))


@runtime_checkable
class Backend(Protocol):
    """What the Engine needs from a network runtime.

    Attributes:
        name: One of :data:`BACKEND_NAMES`.
        device: ``"cpu"`` or ``"cuda"`` / ``"cuda:K"``: where ``run`` wants its input.
        input_dtype: The torch dtype ``run`` wants (``torch.float16`` for fp16 plans
            and CUDA fp16 torch, ``torch.float32`` otherwise).
        precision: The arithmetic the network runs in: ``"fp32"``, ``"fp16"``,
            ``"bf16"`` or ``"int8"``.
        max_batch: The largest N one ``run`` call accepts (a TensorRT plan's profile),
            or None when any N runs; the Engine splits larger batches.
    """

    name: str
    device: str
    input_dtype: Any
    precision: str
    max_batch: int | None

    def run(self, x: Any) -> HeadOutputs:
        """Runs the network.

        Args:
            x: ``Tensor[N, C, H, W]`` float (``input_dtype``) on ``device``, H and W
                multiples of the model's ``size_multiple``.

        Returns:
            The :class:`HeadOutputs` of the batch.
        """
        ...
