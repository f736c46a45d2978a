"""Fixtures of the preprocess tests: random and real (CoNSeP) RGB batches."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


def _mosaic(tiles: np.ndarray, h: int, w: int) -> np.ndarray:
    """An h x w RGB image cut from a grid of 256x256 tiles (rows filled first)."""
    rows, cols = -(-h // 256), -(-w // 256)
    need = rows * cols
    grid = tiles[np.arange(need) % len(tiles)].reshape(rows, cols, 256, 256, 3)
    return np.ascontiguousarray(
        grid.transpose(0, 2, 1, 3, 4).reshape(rows * 256, cols * 256, 3)[:h, :w]
    )


@pytest.fixture
def real_tiles(consep_dir: Path):
    """``real_tiles(k)`` -> ndarray[k, 256, 256, 3] uint8 RGB: CoNSeP tiles (skips if absent)."""
    names = sorted((consep_dir / "images").glob("*.png"))

    def load(k: int, start: int = 0) -> np.ndarray:
        picked = [names[(start + 37 * i) % len(names)] for i in range(k)]
        return np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in picked])

    return load


@pytest.fixture
def real_image(real_tiles):
    """``real_image(h, w, n=1, start=0)`` -> ndarray[n, h, w, 3] uint8 cut from a CoNSeP mosaic."""

    def make(h: int, w: int, n: int = 1, start: int = 0) -> np.ndarray:
        per = -(-h // 256) * -(-w // 256)
        tiles = real_tiles(per * n, start)
        return np.stack([_mosaic(tiles[i * per : (i + 1) * per], h, w) for i in range(n)])

    return make


def random_batch(seed: int, n: int, h: int, w: int) -> np.ndarray:
    """Half uniform noise (flat histograms), half smooth gradients + noise (clipping)."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    ramp = np.linspace(0, 180, w)[None, None, :, None] + np.linspace(0, 40, h)[None, :, None, None]
    smooth = (ramp + rng.integers(0, 30, (n, h, w, 3))).clip(0, 255).astype(np.uint8)
    out[n // 2 :] = smooth[n // 2 :]
    return out


@pytest.fixture
def rand():
    """``rand(seed, n, h, w)`` -> ndarray[n, h, w, 3] uint8 (noise and smooth images)."""
    return random_batch
