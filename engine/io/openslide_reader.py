"""Whole slides (``.svs``, ``.ndpi``, ``.mrxs``, pyramidal TIFF, ...) read through OpenSlide."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from hvx.io.region_readers import SlideReadError, _check_region, _file_identity, _Reader

__all__ = ["OpenSlideReader"]

#: A slide whose smallest level has more pixels (or more than (2 * max_side)^2) is
#: thumbnailed by strided band reads.
_THUMB_LEVEL_PIXELS = 4096 * 4096
#: Most bytes (RGBA) one band read of a strided thumbnail decodes at once.
_THUMB_BAND_BYTES = 32 << 20


class OpenSlideReader(_Reader):
    """A whole slide through OpenSlide, at a level or at a target resolution.

    Args:
        path: ``.svs``, ``.tif``, ``.ndpi``, ``.mrxs``, ... (anything OpenSlide opens).
        level: Pyramid level to read (0 = full resolution); exclusive with ``target_mpp``.
        target_mpp: Microns per pixel to work at (usually the model's). The finest
            level at least as fine as the target is read and resampled (area
            interpolation) when its mpp differs by more than 1%.
        mpp: Microns per pixel of level 0, overriding (or replacing missing) metadata.

    Raises:
        SlideReadError: Missing/unreadable file, a level that does not exist, or
            ``target_mpp`` given for a slide without mpp metadata and no ``mpp``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        level: int | None = None,
        target_mpp: float | None = None,
        mpp: float | None = None,
    ) -> None:
        import openslide

        self.path = Path(path)
        if not self.path.exists():
            raise SlideReadError(f"expected a slide file, got a missing path: {self.path}")
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideError as e:
            raise SlideReadError(
                f"expected a slide OpenSlide can read, got {self.path}: {e}"
            ) from e
        s = self._slide
        if mpp is None:
            raw = s.properties.get(openslide.PROPERTY_NAME_MPP_X)
            mpp = float(raw) if raw not in (None, "") else None
        if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
            raise SlideReadError(f"expected a positive --mpp, got {mpp}")
        self.base_mpp = mpp
        if level is not None and target_mpp is not None:
            raise ValueError("expected level or target_mpp, got both")
        if level is not None and not 0 <= level < s.level_count:
            raise SlideReadError(
                f"expected a level in [0, {s.level_count - 1}] for {self.path.name}, got {level}"
            )
        self.scale = 1.0  # level pixels per working pixel
        if target_mpp is not None:
            if mpp is None:
                raise SlideReadError(
                    f"{self.path.name} has no microns-per-pixel metadata: pass --mpp "
                    "(the slide's level-0 resolution) so it can be read at the model's"
                )
            levels = [mpp * d for d in s.level_downsamples]
            ok = [i for i, m in enumerate(levels) if m <= target_mpp * 1.01]
            level = max(ok, key=lambda i: levels[i]) if ok else 0
            ratio = target_mpp / levels[level]
            self.scale = 1.0 if abs(ratio - 1.0) <= 0.01 else ratio
        self.level = int(level or 0)
        lw, lh = s.level_dimensions[self.level]
        self._down = float(s.level_downsamples[self.level])
        self.height = math.floor(lh / self.scale)
        self.width = math.floor(lw / self.scale)
        self.mpp = None if mpp is None else mpp * self._down * self.scale

    def read(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Pixels ``[y:y+h, x:x+w]`` at the working resolution, RGB, on white."""
        import cv2
        import openslide

        _check_region(self, y, x, h, w)
        s = self.scale
        ly, lx = math.floor(y * s), math.floor(x * s)
        lh, lw = max(1, round(h * s)), max(1, round(w * s))
        try:
            rgba = np.asarray(
                self._slide.read_region(
                    (int(lx * self._down), int(ly * self._down)), self.level, (lw, lh)
                )
            )
        except openslide.OpenSlideError as e:
            raise SlideReadError(
                f"expected readable pixels at y={y} x={x} of {self.path.name}, got {e} "
                "(truncated or corrupt file?)"
            ) from e
        alpha = rgba[..., 3:4].astype(np.uint16)
        rgb = ((rgba[..., :3] * alpha + 255 * (255 - alpha)) // 255).astype(np.uint8)
        if (lh, lw) != (h, w):
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(rgb)

    def thumbnail(self, max_side: int = 2048) -> np.ndarray:
        """Thumbnail with the longer side <= ``max_side``, RGB on white.

        From OpenSlide's thumbnail when the slide has a small enough level (at most
        ``min(4096^2, (2 * max_side)^2)`` pixels); a slide
        without one (a single-level tiled TIFF) is read in strided bands of its
        smallest level, at most ``_THUMB_BAND_BYTES`` per read, never whole.
        """
        import openslide

        s = self._slide
        lw, lh = s.level_dimensions[-1]
        try:
            if lw * lh <= min(_THUMB_LEVEL_PIXELS, (2 * max_side) ** 2):
                return np.asarray(s.get_thumbnail((max_side, max_side)).convert("RGB"))
            return self._strided_thumbnail(s.level_count - 1, max_side)
        except openslide.OpenSlideError as e:
            raise SlideReadError(f"expected a readable slide, got {self.path.name}: {e}") from e

    def _strided_thumbnail(self, level: int, max_side: int) -> np.ndarray:
        """Every ``step``-th pixel of ``level``, read in bands of bounded size."""
        lw, lh = self._slide.level_dimensions[level]
        down = float(self._slide.level_downsamples[level])
        step = max(1, math.ceil(max(lw, lh) / max_side))
        band = max(step, (_THUMB_BAND_BYTES // (4 * lw) // step) * step)
        rows = []
        for y in range(0, lh, band):
            h = min(band, lh - y)
            rgba = np.asarray(self._slide.read_region((0, int(y * down)), level, (lw, h)))
            sub = rgba[::step, ::step]
            alpha = sub[..., 3:4].astype(np.uint16)
            rows.append(((sub[..., :3] * alpha + 255 * (255 - alpha)) // 255).astype(np.uint8))
        return np.ascontiguousarray(np.concatenate(rows))

    def identity(self) -> dict:
        """File identity plus the level, scale and mpp read at."""
        return {
            **_file_identity(self.path),
            "level": self.level,
            "scale": self.scale,
            "mpp": self.mpp,
        }

    def close(self) -> None:
        """Closes the slide."""
        self._slide.close()
