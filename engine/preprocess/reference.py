"""The OpenCV oracle of hvx.preprocess (SPEC §7a), written from the spec.

``planes_ref`` is what every fast path must reproduce bit for bit: CLAHE
(``cv2.createCLAHE(clipLimit, tileGridSize).apply``) on each of R, G, B, then
``cvtColor`` to HSV and YCrCb of the enhanced image, stacked as B, G, R, S, Cr, Cb.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from hvx.preprocess._params import norm_table

if TYPE_CHECKING:
    from hvx.preprocess import PreprocessConfig

__all__ = ["clahe_rgb_ref", "clahe_rgb_tiles_ref", "planes_ref", "preprocess_ref"]


def clahe_rgb_ref(image: np.ndarray, clip_limit: float, tile_grid: tuple[int, int]) -> np.ndarray:
    """OpenCV CLAHE on each of R, G, B of one image.

    Args:
        image: ndarray[H, W, 3] uint8 RGB.
        clip_limit: OpenCV clipLimit (> 0).
        tile_grid: OpenCV tileGridSize, (tiles across, tiles down).

    Returns:
        ndarray[H, W, 3] uint8, the enhanced RGB image.
    """
    clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=tuple(tile_grid))
    return np.stack([clahe.apply(np.ascontiguousarray(image[..., c])) for c in range(3)], -1)


def clahe_rgb_tiles_ref(image: np.ndarray, clip_limit: float, tile_size: int) -> np.ndarray:
    """CLAHE with fixed ``tile_size`` x ``tile_size`` tiles (``PreprocessConfig.tile_size``).

    Pads the image bottom/right with ``cv2.BORDER_REFLECT_101`` to multiples of
    ``tile_size``, runs OpenCV CLAHE with the grid that makes every tile exactly
    ``tile_size`` pixels, and crops back.

    Args:
        image: ndarray[H, W, 3] uint8 RGB.
        clip_limit: OpenCV clipLimit (> 0).
        tile_size: Tile side in pixels (>= 1).

    Returns:
        ndarray[H, W, 3] uint8, the enhanced RGB image.
    """
    h, w = image.shape[:2]
    gx, gy = -(-w // tile_size), -(-h // tile_size)
    padded = cv2.copyMakeBorder(
        np.ascontiguousarray(image),
        0, gy * tile_size - h, 0, gx * tile_size - w,
        cv2.BORDER_REFLECT_101,
    )  # fmt: skip
    return clahe_rgb_ref(padded, clip_limit, (gx, gy))[:h, :w]


def planes_ref(batch: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The uint8 planes before scaling, per SPEC §7a.

    Args:
        batch: ndarray[N, H, W, 3] uint8 RGB.
        config: Mode, clip limit and tile grid (mean/std are not used here).

    Returns:
        ndarray[N, C, H, W] uint8; C = 6 (B, G, R, S, Cr, Cb) or 3 (R, G, B).
    """
    if config.mode == "rgb":
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
    n, h, w, _ = batch.shape
    out = np.empty((n, 6, h, w), dtype=np.uint8)
    for i in range(n):
        if config.tile_size is None:
            rgb = clahe_rgb_ref(batch[i], config.clip_limit, config.tile_grid)
        else:
            rgb = clahe_rgb_tiles_ref(batch[i], config.clip_limit, config.tile_size)
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
        out[i, 0], out[i, 1], out[i, 2] = rgb[..., 2], rgb[..., 1], rgb[..., 0]
        out[i, 3], out[i, 4], out[i, 5] = hsv[..., 1], ycrcb[..., 1], ycrcb[..., 2]
    return out


def preprocess_ref(batch: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The float network input: ``(planes / 255 - mean) / std`` per channel.

    Args:
        batch: ndarray[N, H, W, 3] uint8 RGB.
        config: The preprocessing configuration.

    Returns:
        ndarray[N, C, H, W] float32.
    """
    planes = planes_ref(batch, config)
    if not config.normalised:  # one correctly rounded division == the table, but faster
        return np.divide(planes, np.float32(255.0), dtype=np.float32)
    table = norm_table(config.in_chans, config.mean, config.std)
    out = np.empty(planes.shape, dtype=np.float32)
    for c in range(config.in_chans):
        np.take(table[c], planes[:, c], out=out[:, c])
    return out
