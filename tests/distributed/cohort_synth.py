"""Small synthetic slides for the distributed tests: mosaics of the shipped sample tiles.

The four CoNSeP tiles in ``hvx/samples`` (always installed) are flipped and
rotated at random into a mosaic; ``blank`` tiles of white glass exercise the
tissue mask (background tiles and whole background regions are skipped).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def sample_tiles() -> list[np.ndarray]:
    """The shipped sample tiles, ``ndarray[256, 256, 3] uint8`` RGB."""
    from hvx.assets import sample_paths

    tiles = [cv2.imread(str(p), cv2.IMREAD_COLOR)[..., ::-1] for p in sample_paths()]
    if not tiles:
        raise FileNotFoundError("expected the sample tiles shipped in hvx/samples, found none")
    return tiles


def mosaic_slide(
    path: Path, rows: int, cols: int, *, seed: int = 0, blank: float = 0.0, crop=None
) -> Path:
    """Writes a ``(rows*256, cols*256)`` PNG mosaic (optionally cropped) and returns its path.

    Args:
        path: Output ``.png``.
        rows: Mosaic rows of 256 px tiles.
        cols: Mosaic columns.
        seed: Random seed (tile choice, flips, rotations).
        blank: Fraction of cells left white (background).
        crop: ``(height, width)`` to cut the mosaic to (odd sizes), or None.
    """
    tiles = sample_tiles()
    rng = np.random.default_rng(seed)
    img = np.full((rows * 256, cols * 256, 3), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            if rng.random() < blank:
                continue
            t = np.rot90(tiles[rng.integers(len(tiles))], int(rng.integers(4)))
            if rng.random() < 0.5:
                t = t[:, ::-1]
            img[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256] = t
    if crop is not None:
        img = img[: crop[0], : crop[1]]
    cv2.imwrite(str(path), np.ascontiguousarray(img[..., ::-1]))
    return path
