"""The backend of ``Engine.from_model``: an in-memory torch network, run as it is.

``hvx.backends.torch.TorchBackend`` owns the network it runs (it moves it to its
device and precision, freezes its parameters, captures CUDA graphs). A model that
is still being trained, or whose float16 copy is being checked, must not be
changed: :class:`ModelRunner` runs such a model on the device and in the dtype
it already has, in eval mode for the call only, without gradients, optionally
under CUDA autocast (mixed precision, as training runs it).
"""

from __future__ import annotations

import contextlib

import torch

from hvx.backends.base import HeadOutputs
from hvx.model import HoVerNetInference

__all__ = ["AMP_DTYPES", "ModelRunner"]

#: ``amp`` values: the autocast dtype by name.
AMP_DTYPES = ("float16", "bfloat16")

_PRECISION_OF = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


class ModelRunner:
    """Runs a ``hvx.model`` network (logits) as probabilities, without changing it.

    Args:
        model: A ``HoVerNet`` or ``OfficialHoVerNet`` (wrapped in
            ``HoVerNetInference``, shared, not copied). Its parameters' device and
            dtype are used as they are.
        amp: None, or an autocast dtype of :data:`AMP_DTYPES` (CUDA only): the
            input stays float32 and autocast picks each operation's precision.

    Attributes:
        name: "torch".
        device: The model's device ("cpu", "cuda:0", ...).
        input_dtype: The model's parameter dtype (float32 under autocast).
        precision: "fp32", "fp16" or "bf16" (the autocast dtype with ``amp``).
        max_batch: None: any batch size runs.

    Raises:
        ValueError: For an unknown ``amp``, ``amp`` on a CPU model, or parameters
            in a dtype other than float32/float16/bfloat16.
    """

    name = "torch"
    max_batch: int | None = None

    def __init__(self, model: torch.nn.Module, *, amp: str | None = None) -> None:

        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None else torch.float32
        if dtype not in _PRECISION_OF:
            raise ValueError(f"expected float32, float16 or bfloat16 parameters, got {dtype}")
        if amp is not None and amp not in AMP_DTYPES:
            raise ValueError(f"expected amp None or one of {AMP_DTYPES}, got {amp!r}")
        if amp is not None and device.type != "cuda":
            raise ValueError(f"expected a CUDA model for amp={amp!r}, got one on {device}")
        if amp is not None and dtype != torch.float32:
            raise ValueError(f"expected float32 parameters for amp={amp!r}, got {dtype}")
        self.module = HoVerNetInference(model)
        self.device = "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}"
        self.input_dtype = dtype
        self.amp = amp
        self.precision = _PRECISION_OF[getattr(torch, amp)] if amp else _PRECISION_OF[dtype]

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=getattr(torch, self.amp))

    def run(self, x: torch.Tensor) -> HeadOutputs:
        """Runs the network on ``x`` in eval mode (the model's mode is restored after).

        Args:
            x: ``Tensor[N, C, H, W]`` float (``input_dtype``) on ``device``.

        Returns:
            :class:`HeadOutputs` of torch tensors on ``device`` (float16 heads under
            float16 autocast).

        Raises:
            TypeError: If ``x`` is not a torch tensor.
            ValueError: If ``x`` is not 4-D or empty.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[0] == 0:
            raise ValueError(f"expected a non-empty (N, C, H, W) tensor, got {tuple(x.shape)}")
        model = self.module.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), self._autocast():
                np_prob, hv, tp_prob = self.module(x.to(device=self.device, dtype=self.input_dtype))
        finally:
            model.train(was_training)
        return HeadOutputs(np_prob, hv, tp_prob)

    def __repr__(self) -> str:
        return f"ModelRunner(device={self.device!r}, precision={self.precision!r})"
