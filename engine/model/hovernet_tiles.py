"""Tile-mode inference of valid-padding networks, as the official HoVer-Net ``infer/tile.py``.

A network whose output (``output`` x ``output``) is the centred crop of its input
(``window`` x ``window``) is run over an H x W image like this (official tile mode):

1. the image is padded by reflection (numpy ``np.pad(..., "reflect")``, i.e. the
   edge pixel not repeated, continued periodically when the padding exceeds the
   image) with ``(window - output) // 2`` rows/columns at the top/left and enough
   at the bottom/right;
2. windows start every ``output`` pixels: ``ceil((H - output) / output) + 1`` rows
   of windows (at least 1), likewise across;
3. the window outputs are laid side by side and the result cropped to H x W.

Only the padded pixels some window reads are materialised (the official code pads
more at the bottom/right; the extra is never read). Windows are cut and run a
batch at a time, so memory grows with the image, not with the window overlap.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from hvx.backends.base import HeadOutputs

__all__ = ["fit_window", "reflect_index", "run_valid", "window_grid"]


def reflect_index(n: int, start: int, length: int) -> np.ndarray:
    """Source indices of a reflect-padded axis (``np.pad`` mode "reflect" semantics).

    Args:
        n: Length of the axis, >= 1.
        start: First padded position, relative to the axis (negative = padding).
        length: Number of positions.

    Returns:
        int64 array of ``length`` indices in ``[0, n)``: position ``start + t`` of
        the padded axis holds element ``out[t]``.
    """
    if n < 1 or length < 0:
        raise ValueError(f"expected n >= 1 and length >= 0, got {n}, {length}")
    i = np.arange(start, start + length, dtype=np.int64)
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i = np.mod(i, period)
    return np.where(i >= n, period - i, i)


def window_grid(height: int, width: int, output: int) -> tuple[int, int]:
    """Windows down and across for an image, as the official ``get_last_steps``."""
    rows = max(1, math.ceil((height - output) / output) + 1)
    cols = max(1, math.ceil((width - output) / output) + 1)
    return rows, cols


def _alloc(like, shape: tuple[int, ...]):
    if isinstance(like, torch.Tensor):
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    return np.empty(shape, dtype=np.asarray(like).dtype)


def run_valid(
    run: Callable[[torch.Tensor], HeadOutputs],
    x: torch.Tensor,
    window: int,
    output: int,
    batch: int = 8,
) -> HeadOutputs:
    """Runs a valid-padding network over whole images in tile mode (module docstring).

    Args:
        run: The network: ``Tensor[B, C, window, window]`` -> :class:`HeadOutputs`
            of side ``output`` (torch tensors on any device, or numpy arrays).
        x: ``Tensor[N, C, H, W]`` float, the preprocessed images (any H, W >= 1).
        window: Network input side.
        output: Network output side (centred crop of the input), < ``window``,
            ``window - output`` even.
        batch: Windows per ``run`` call.

    Returns:
        :class:`HeadOutputs` of the images, ``[N, ..., H, W]``.

    Raises:
        ValueError: For inconsistent sizes or a network giving another output size.
    """
    if not (0 < output <= window) or (window - output) % 2 or batch < 1:
        raise ValueError(
            f"expected 0 < output <= window, window - output even and batch >= 1, "
            f"got window={window}, output={output}, batch={batch}"
        )
    n, _, h, w = (int(s) for s in x.shape)
    rows, cols = window_grid(h, w, output)
    pad = (window - output) // 2
    iy = torch.from_numpy(reflect_index(h, -pad, (rows - 1) * output + window)).to(x.device)
    ix = torch.from_numpy(reflect_index(w, -pad, (cols - 1) * output + window)).to(x.device)
    xp = x.index_select(2, iy).index_select(3, ix)
    places = [(k, i, j) for k in range(n) for i in range(rows) for j in range(cols)]
    out_np = out_hv = out_tp = None
    for s in range(0, len(places), batch):
        chunk = places[s : s + batch]
        wins = torch.stack(
            [
                xp[k, :, i * output : i * output + window, j * output : j * output + window]
                for k, i, j in chunk
            ]
        )
        heads = run(wins)
        if heads.spatial != (output, output) or len(heads) != len(chunk):
            raise ValueError(
                f"expected {len(chunk)} outputs of {output}x{output} from the network, got "
                f"{len(heads)} of {heads.spatial}"
            )
        if out_np is None:
            full = (rows * output, cols * output)
            out_np = _alloc(heads.np_prob, (n, *full))
            out_hv = _alloc(heads.hv, (n, 2, *full))
            out_tp = _alloc(heads.tp_prob, (n, heads.num_types, *full))
        for t, (k, i, j) in enumerate(chunk):
            ys, xs = slice(i * output, (i + 1) * output), slice(j * output, (j + 1) * output)
            out_np[k, ys, xs] = heads.np_prob[t]
            out_hv[k, :, ys, xs] = heads.hv[t]
            out_tp[k, :, ys, xs] = heads.tp_prob[t]
    return HeadOutputs(out_np, out_hv, out_tp).crop(h, w)


def fit_window(x: torch.Tensor, window: int) -> torch.Tensor:
    """Reflect-pads (centred) or centre-crops ``x`` (N, C, H, W) to ``window`` x ``window``.

    Used where a whole tile must go through a valid network in one window (the
    fp16 check on the sample tiles).
    """
    h, w = int(x.shape[2]), int(x.shape[3])
    iy = reflect_index(h, (h - window) // 2, window)
    ix = reflect_index(w, (w - window) // 2, window)
    return x.index_select(2, torch.from_numpy(iy).to(x.device)).index_select(
        3, torch.from_numpy(ix).to(x.device)
    )
