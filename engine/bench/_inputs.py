"""Real H&E tiles for the benchmark stages: CoNSeP when present, else packaged samples.

Lookup order (the same as ``tests/conftest.py``):

1. ``$HVX_CONSEP_DIR`` (a folder with ``images/*.png``);
2. ``shared/data/consep`` beside the checkout or beside any folder above it
   (git worktrees live deeper);
3. sample tiles packaged with hvx (``hvx/data/samples/*.png``), once they ship.

Never synthetic or all-zero pixels: network-free stages may not care, but
post-processing time depends on what the network predicts from real tissue.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hvx.assets import sample_paths

__all__ = ["find_consep", "find_tile_files", "real_tiles"]


def find_consep() -> Path | None:
    """The CoNSeP folder (with ``images/``), or None when it is not around."""
    env = os.environ.get("HVX_CONSEP_DIR")
    if env:
        path = Path(env)
        return path if (path / "images").is_dir() else None
    for parent in Path(__file__).resolve().parents:
        path = parent / "shared" / "data" / "consep"
        if (path / "images").is_dir():
            return path
    return None


def _packaged_samples() -> list[Path]:
    return sample_paths()


def find_tile_files() -> tuple[list[Path], str]:
    """The tile image files to benchmark on and where they came from.

    Raises:
        FileNotFoundError: Neither CoNSeP nor packaged samples were found; the
            message says how to point hvx-bench at real tiles.
    """
    root = find_consep()
    if root is not None:
        files = sorted((root / "images").glob("*.png"))
        if files:
            return files, f"CoNSeP tiles ({root})"
    files = _packaged_samples()
    if files:
        return files, "hvx packaged sample tiles"
    hint = os.environ.get("HVX_CONSEP_DIR", "shared/data/consep beside the checkout")
    raise FileNotFoundError(
        "expected real H&E tiles to benchmark on (a folder with images/*.png: set "
        f"HVX_CONSEP_DIR, or the packaged samples), got none at {hint}"
    )


def real_tiles(n: int, size: int) -> tuple[np.ndarray, str]:
    """``n`` real RGB tiles of ``size`` x ``size``.

    Tiles are picked with a fixed stride through the sorted files (so a batch
    mixes source images); larger sizes are 2x2 (or more) mosaics of tiles,
    smaller ones top-left crops.

    Args:
        n: Number of tiles, >= 1.
        size: Tile edge in pixels, >= 1.

    Returns:
        ``(ndarray[n, size, size, 3] uint8 RGB, a description of the source)``.

    Raises:
        ValueError: For n or size < 1.
        FileNotFoundError: No real tiles are around (see :func:`find_tile_files`).
    """
    import cv2

    if n < 1 or size < 1:
        raise ValueError(f"expected n >= 1 and size >= 1, got n={n}, size={size}")
    files, source = find_tile_files()
    out = np.empty((n, size, size, 3), np.uint8)
    k = 0
    for i in range(n):
        filled = 0
        row = []
        while filled < size:  # a mosaic row by row when size exceeds one tile
            strip = []
            width = 0
            while width < size:
                path = files[(7 * k) % len(files)]
                k += 1
                img = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if img is None:
                    raise ValueError(f"expected a readable image, got {path}")
                strip.append(img)
                width += img.shape[1]
            h = min(t.shape[0] for t in strip)
            row.append(np.concatenate([t[:h] for t in strip], axis=1)[:, :size])
            filled += h
        tile = np.concatenate(row, axis=0)[:size]
        out[i] = cv2.cvtColor(tile, cv2.COLOR_BGR2RGB)
    return out, source
