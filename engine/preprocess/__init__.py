"""hvx.preprocess: uint8 RGB tiles -> the network input (SPEC §7a).

One function for training and inference: CLAHE (OpenCV semantics) on each of
R, G, B, then B, G, R, S (HSV), Cr, Cb (YCrCb) of the enhanced image, as float
(N, 6, H, W), optionally normalised per channel; or plain R, G, B / 255 ("rgb").

Implementations (all bit-exact with OpenCV on the uint8 planes):
    "triton": a fused Triton kernel pair (``torch.ops.hvx.clahe_stack``); runs on
        CUDA, or on the CPU under ``TRITON_INTERPRET=1`` (tests, CI).
    "numba": a parallel CPU path (CPU inference, training data pipelines).
    "reference": OpenCV + numpy, the oracle (:mod:`hvx.preprocess.reference`).
    "auto": "triton" when the output goes to a CUDA device, else "numba".
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch

from hvx.preprocess._config import PreprocessConfig
from hvx.preprocess._params import SDIV, ClaheGeometry, norm_table

__all__ = ["IMPLS", "PreprocessConfig", "preprocess"]

_log = logging.getLogger(__name__)
_logged: set[str] = set()

#: Accepted values of ``impl``.
IMPLS = ("auto", "triton", "numba", "reference")
_OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_EXPECTED = "uint8 RGB of shape (N, H, W, 3) or (H, W, 3) (channels last)"


def _as_nhwc(batch) -> np.ndarray | torch.Tensor:
    """Validates the input and returns it as a 4-D (N, H, W, 3) uint8 array/tensor."""
    if isinstance(batch, np.ndarray):
        dtype_ok = batch.dtype == np.uint8
    elif isinstance(batch, torch.Tensor):
        dtype_ok = batch.dtype == torch.uint8
    else:
        raise TypeError(f"expected a numpy array or torch tensor, {_EXPECTED}; got {type(batch)}")
    shape = tuple(batch.shape)
    if not dtype_ok:
        raise ValueError(f"expected {_EXPECTED}, got dtype {batch.dtype} (shape {shape})")
    if len(shape) not in (3, 4):
        raise ValueError(f"expected {_EXPECTED}, got shape {shape}")
    if shape[-1] != 3:
        lead = shape[-3] if len(shape) == 4 else shape[0]
        hint = (
            "; it looks channels-first: move channels last, e.g. x.permute(0, 2, 3, 1)"
            if lead == 3
            else ""
        )
        raise ValueError(f"expected {_EXPECTED}, got shape {shape} ({shape[-1]} channels){hint}")
    if len(shape) == 3:
        batch = batch[None]
    if batch.shape[0] == 0:
        raise ValueError(f"expected a non-empty batch, {_EXPECTED}; got shape {shape}")
    if 0 in batch.shape[1:3]:
        raise ValueError(f"expected H, W >= 1, {_EXPECTED}; got shape {shape}")
    return batch


def _to_numpy(batch) -> np.ndarray:
    """C-contiguous, writeable numpy copy-or-view of a validated batch."""
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().numpy()
    if not batch.flags.c_contiguous or not batch.flags.writeable:
        batch = np.array(batch, order="C", copy=True)
    return batch


def _to_tensor(batch, device: torch.device) -> torch.Tensor:
    """A uint8 tensor on ``device`` (strides kept: the Triton kernels take any)."""
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(_to_numpy(batch))
    return batch.to(device)


def _resolve(batch, device, dtype, impl: str) -> tuple[torch.device, torch.dtype, str]:
    if impl not in IMPLS:
        raise ValueError(f"expected impl in {IMPLS}, got {impl!r}")
    if device is None:
        device = batch.device if isinstance(batch, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in _OUT_DTYPES:
        raise ValueError(f"expected dtype in {_OUT_DTYPES}, got {dtype!r}")
    if impl == "auto":
        impl = "triton" if device.type == "cuda" else "numba"
    if impl not in _logged:
        _logged.add(impl)
        _log.debug("hvx.preprocess: using impl=%s (device %s)", impl, device)
    return device, dtype, impl


@functools.lru_cache(maxsize=16)
def _device_tables(device: torch.device, channels: int, mean, std):
    """The normalisation and HSV tables on ``device``, uploaded once.

    Cached so that repeated calls (and CUDA-graph capture after a warm-up
    call) copy nothing from the host.
    """
    table = torch.from_numpy(norm_table(channels, mean, std)).to(device)
    return table, torch.from_numpy(SDIV).to(device)


def _run_triton(batch, config: PreprocessConfig, device: torch.device, dtype) -> torch.Tensor:
    from hvx.preprocess import _triton

    if device.type != "cuda" and not _triton.interpreted():
        raise RuntimeError(
            f"impl='triton' on device {device} needs a CUDA device, or TRITON_INTERPRET=1 "
            "set before triton is imported (CPU interpreter); use impl='numba' on the CPU"
        )
    x = _to_tensor(batch, device)
    _, h, w, _ = x.shape
    geo = ClaheGeometry.create(h, w, config.tile_grid, config.clip_limit, config.tile_size)
    table, sdiv = _device_tables(device, config.in_chans, config.mean, config.std)
    return _triton.clahe_stack(
        x, table, sdiv,
        geo.grid_x, geo.grid_y, geo.tile_w, geo.tile_h, geo.clip,
        float(geo.lut_scale), float(geo.inv_tw), float(geo.inv_th),
        config.mode == "6ch", dtype,
    )  # fmt: skip


def preprocess(
    batch: np.ndarray | torch.Tensor,
    config: PreprocessConfig = PreprocessConfig(),  # noqa: B008 (frozen, immutable)
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Turns uint8 RGB tiles into the network input.

    Args:
        batch: ndarray or Tensor[N, H, W, 3] / [H, W, 3] uint8 RGB, channels last,
            any strides, on any device. Channels-first input is rejected.
        config: Mode, CLAHE parameters and normalisation.
        device: Device of the output; None = the input's (numpy: CPU).
        dtype: Output dtype (float32, float16 or bfloat16); None = float16 on
            CUDA, float32 on the CPU.
        impl: "auto", "triton", "numba" or "reference" (see the module docstring).

    Returns:
        Tensor[N, C, H, W] ``dtype`` on ``device``, C = ``config.in_chans``:
        "6ch": B, G, R, S, Cr, Cb; "rgb": R, G, B. Values ``(plane / 255 - mean)
        / std`` per channel (plane in 0..255; [0, 1] without mean/std).

    Raises:
        TypeError: If ``batch`` is not an array/tensor or ``config`` not a PreprocessConfig.
        ValueError: On a wrong dtype, rank, channel count, empty batch or zero-size
            image, an unknown ``impl`` or an unsupported ``dtype``.
        RuntimeError: If impl="triton" is asked for on the CPU without the interpreter.
    """
    if not isinstance(config, PreprocessConfig):
        raise TypeError(f"expected config as a PreprocessConfig, got {type(config).__name__}")
    batch = _as_nhwc(batch)
    device, dtype, impl = _resolve(batch, device, dtype, impl)
    if impl == "triton":
        return _run_triton(batch, config, device, dtype)
    if impl == "numba":
        from hvx.preprocess._numba import preprocess_numba as run
    else:
        from hvx.preprocess.reference import preprocess_ref as run
    out = torch.from_numpy(run(_to_numpy(batch), config))
    return out.to(device=device, dtype=dtype)
