"""Large images and whole slides, read region by region: :func:`open_image`; tissue masks.

Every reader exposes the same small interface, at the *working* resolution (the
one tiles are cut at):

- ``height``, ``width``: image size in pixels;
- ``read(y, x, h, w) -> ndarray[h, w, 3] uint8`` RGB (inside the image);
- ``thumbnail(max_side) -> ndarray[h, w, 3] uint8`` (for the tissue mask);
- ``mpp``: microns per pixel (None when unknown), ``identity()``: a JSON-ready
  description that changes when the input changes (what a resumed run checks).

:class:`ArrayReader` wraps an in-memory array; :class:`TiffReader` reads big
plain TIFFs page by page through tifffile (memory-mapped when the file is
uncompressed and contiguous, else tile by tile); :class:`OpenSlideReader` reads
``.svs``/``.tif``/``.ndpi``/``.mrxs`` slides through OpenSlide at a chosen level or
a target mpp (resampling when no level matches); :class:`ResampledReader` shows
another reader at a different resolution; :func:`open_image` picks one.
:func:`tissue_mask` finds tissue on a reader's thumbnail. The readers live in
:mod:`hvx.io.region_readers` and :mod:`hvx.io.openslide_reader`; all are
importable from here (and, for existing scripts, from ``hvx.slide``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from hvx.io.openslide_reader import OpenSlideReader
from hvx.io.readers import MAX_DECODE_PIXELS, image_size
from hvx.io.region_readers import ArrayReader, SlideReadError, TiffReader, _check_region, _Reader

__all__ = [
    "SLIDE_SUFFIXES",
    "ArrayReader",
    "OpenSlideReader",
    "ResampledReader",
    "SlideReadError",
    "TiffReader",
    "open_image",
    "tissue_mask",
]

#: Suffixes opened with OpenSlide (pyramidal slide formats).
SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")


class ResampledReader(_Reader):
    """Another reader seen at a different resolution (plain images given ``--mpp``).

    Regions are read from the source and resized (area when shrinking, linear
    when enlarging), as :class:`OpenSlideReader` does for slides without a
    matching level, so the network sees the model's resolution.

    Args:
        source: A reader with ``mpp`` set.
        target_mpp: Microns per pixel to present.
    """

    def __init__(self, source, target_mpp: float) -> None:
        self.source = source
        self.scale = target_mpp / source.mpp  # source pixels per working pixel
        self.height = max(1, math.floor(source.height / self.scale))
        self.width = max(1, math.floor(source.width / self.scale))
        self.mpp = float(target_mpp)

    def read(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Pixels ``[y:y+h, x:x+w]`` at the target resolution."""
        import cv2

        _check_region(self, y, x, h, w)
        s, src = self.scale, self.source
        sy, sx = min(math.floor(y * s), src.height - 1), min(math.floor(x * s), src.width - 1)
        sh = max(1, min(round(h * s), src.height - sy))
        sw = max(1, min(round(w * s), src.width - sx))
        px = np.asarray(src.read(sy, sx, sh, sw))
        interp = cv2.INTER_AREA if s > 1 else cv2.INTER_LINEAR
        return np.ascontiguousarray(cv2.resize(px, (w, h), interpolation=interp))

    def thumbnail(self, max_side: int = 2048) -> np.ndarray:
        """The source's thumbnail (the same field of view)."""
        return self.source.thumbnail(max_side)

    def identity(self) -> dict:
        """The source's identity and the resolution read at."""
        return {**self.source.identity(), "mpp": self.mpp, "scale": self.scale}

    def close(self) -> None:
        """Closes the source."""
        self.source.close()


def _resampled(reader, target_mpp: float | None):
    """``reader`` at ``target_mpp`` when both mpps are known and differ by > 1 %."""
    if target_mpp is None or reader.mpp is None or abs(target_mpp / reader.mpp - 1) <= 0.01:
        return reader
    return ResampledReader(reader, target_mpp)


def open_image(
    path: str | os.PathLike,
    *,
    level: int | None = None,
    target_mpp: float | None = None,
    mpp: float | None = None,
):
    """Opens a slide or a large plain image with the right reader.

    Slide formats (:data:`SLIDE_SUFFIXES`) and pyramidal/tiled TIFFs OpenSlide
    recognises go through :class:`OpenSlideReader`; other TIFFs through
    :class:`TiffReader`; PNG/JPEG are decoded once into an :class:`ArrayReader`
    (refused beyond ``hvx.io.readers.MAX_DECODE_PIXELS``). A plain image with a
    known ``mpp`` other than ``target_mpp`` is resampled (:class:`ResampledReader`).

    Raises:
        SlideReadError: For missing or unreadable files (see the readers).
    """
    import cv2

    p = Path(path)
    if p.is_dir():
        raise SlideReadError(
            f"expected an image or slide file, got a folder: {p} (hvx slide reads one file; "
            "hvx infer takes folders)"
        )
    if not p.is_file():
        raise SlideReadError(f"expected an image or slide file, got a missing path: {p}")
    suffix = p.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return OpenSlideReader(p, level=level, target_mpp=target_mpp, mpp=mpp)
    if suffix in (".tif", ".tiff"):
        import openslide

        vendor = None
        try:
            vendor = openslide.OpenSlide.detect_format(str(p))
        except openslide.OpenSlideError:
            vendor = None
        if vendor is not None and (vendor != "generic-tiff" or target_mpp or level):
            return OpenSlideReader(p, level=level, target_mpp=target_mpp, mpp=mpp)
        if level:
            raise SlideReadError(f"expected level 0 for a plain TIFF, got level {level}")
        return _resampled(TiffReader(p, mpp=mpp), target_mpp)
    if level:
        raise SlideReadError(f"expected level 0 for a plain image, got level {level}")
    size = image_size(p)
    if size is not None and size[0] * size[1] > MAX_DECODE_PIXELS:
        raise SlideReadError(
            f"expected a PNG/JPEG of at most {MAX_DECODE_PIXELS} pixels (decoded whole), got "
            f"{size[1]} x {size[0]} in {p}; convert it to a tiled TIFF, read region by region"
        )
    data = np.fromfile(p, dtype=np.uint8)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error as e:
        raise SlideReadError(f"expected a decodable PNG/JPEG, got {p}: {e.err}") from None
    if img is None:
        raise SlideReadError(f"expected a PNG/JPEG/TIFF image or a slide, got {p}")
    return _resampled(ArrayReader(np.ascontiguousarray(img[..., ::-1]), mpp=mpp), target_mpp)


def tissue_mask(thumbnail: np.ndarray, *, min_saturation: int = 20) -> np.ndarray:
    """Tissue vs background on a thumbnail: Otsu's threshold on the HSV saturation.

    Background (glass) is bright and grey, H&E tissue saturated. The threshold is
    Otsu's, floored at ``min_saturation`` (so a blank slide is all background);
    small holes and specks are closed/opened away, then the mask is dilated by
    2 pixels to keep tissue borders.

    Args:
        thumbnail: ``ndarray[h, w, 3] uint8`` RGB.
        min_saturation: Lowest saturation (0..255) that can count as tissue.

    Returns:
        ``ndarray[h, w] bool``, True on tissue.
    """
    import cv2

    thumbnail = np.asarray(thumbnail)
    if thumbnail.ndim != 3 or thumbnail.shape[2] != 3 or thumbnail.dtype != np.uint8:
        raise ValueError(
            f"expected an (h, w, 3) uint8 RGB thumbnail, got {thumbnail.shape} {thumbnail.dtype}"
        )
    sat = cv2.cvtColor(thumbnail, cv2.COLOR_RGB2HSV)[..., 1]
    sat = cv2.GaussianBlur(sat, (5, 5), 0)
    otsu, _ = cv2.threshold(sat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = (sat > max(otsu, min_saturation)).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.dilate(mask, kernel, iterations=1)
    return mask.astype(bool)
