"""Region readers of plain large images (in-memory arrays, plain TIFFs) and their shared parts.

Every region reader (these, :class:`hvx.io.openslide_reader.OpenSlideReader` and
:class:`hvx.io.slides.ResampledReader`) has the interface described in
:mod:`hvx.io.slides`: ``height``, ``width``, ``mpp``, ``read(y, x, h, w)`` ->
``ndarray[h, w, 3] uint8`` RGB, ``thumbnail(max_side)``, ``identity()``, ``close()``
and use as a context manager.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

__all__ = ["ArrayReader", "SlideReadError", "TiffReader"]


class SlideReadError(ValueError):
    """A slide or large image is missing, unreadable, truncated or lacks what is needed."""


def _check_region(reader, y: int, x: int, h: int, w: int) -> None:
    if h < 1 or w < 1 or y < 0 or x < 0 or y + h > reader.height or x + w > reader.width:
        raise ValueError(
            f"expected a region inside the {reader.height} x {reader.width} image, "
            f"got y={y} x={x} h={h} w={w}"
        )


_SAMPLES = 33  # blocks hashed for a file's identity: both ends and 31 evenly spaced
_BLOCK = 1 << 16


def _file_identity(path: Path) -> dict:
    """Name, size, mtime and a hash of sampled blocks (cheap; catches edits in place).

    The blocks (64 KiB each) sit at both ends and at evenly spaced offsets in
    between, so an edit that keeps the size and the ends -- and even the mtime --
    is still seen when it touches a sampled block; a file smaller than the
    samples is hashed whole.
    """
    st = path.stat()
    size = st.st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= _SAMPLES * _BLOCK:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            for k in range(_SAMPLES):
                f.seek(k * (size - _BLOCK) // (_SAMPLES - 1))
                h.update(f.read(_BLOCK))
    return {
        "name": path.name,
        "bytes": size,
        "mtime_ns": st.st_mtime_ns,
        "sha256_sampled": h.hexdigest(),
    }


def _thumbnail_of(reader, max_side: int) -> np.ndarray:
    """Generic thumbnail: reads a strided grid of the image, in strips."""
    import cv2

    step = max(1, math.ceil(max(reader.height, reader.width) / max_side))
    rows = []
    band = max(step, ((32 << 20) // (3 * reader.width) // step) * step)  # <= ~32 MiB per read
    for y in range(0, reader.height, band):
        h = min(band, reader.height - y)
        strip = reader.read(y, 0, h, reader.width)
        rows.append(np.ascontiguousarray(strip[::step, ::step]))
    thumb = np.concatenate(rows)
    return cv2.resize(thumb, (thumb.shape[1], thumb.shape[0]))  # contiguous copy


class _Reader:
    """Context-manager plumbing shared by the readers."""

    def close(self) -> None:
        """Releases the file (nothing to do for arrays)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ArrayReader(_Reader):
    """An in-memory ``ndarray[H, W, 3] uint8`` RGB image.

    Args:
        image: The image.
        mpp: Its microns per pixel, if known.

    Raises:
        ValueError: If the image is not (H, W, 3) uint8.
    """

    def __init__(self, image: np.ndarray, mpp: float | None = None) -> None:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
            raise ValueError(
                f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
            )
        self.image = image
        self.height, self.width = image.shape[:2]
        self.mpp = mpp

    def read(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Pixels ``[y:y+h, x:x+w]``."""
        _check_region(self, y, x, h, w)
        return self.image[y : y + h, x : x + w]

    def thumbnail(self, max_side: int = 2048) -> np.ndarray:
        """Strided thumbnail with the longer side <= ``max_side``."""
        step = max(1, math.ceil(max(self.height, self.width) / max_side))
        return np.ascontiguousarray(self.image[::step, ::step])

    def identity(self) -> dict:
        """Shape and a hash of a strided sample of the pixels."""
        step = max(1, max(self.height, self.width) // 512)
        sample = np.ascontiguousarray(self.image[::step, ::step])
        return {
            "array": [self.height, self.width],
            "sha256_sample": hashlib.sha256(sample.tobytes()).hexdigest(),
        }


class TiffReader(_Reader):
    """A plain (non-pyramidal) TIFF read region by region, never whole.

    Uncompressed contiguous images are memory-mapped; others are read through
    tifffile's tile/strip access (``ZarrTiffStore`` is not needed: segments are
    decoded on demand per region).

    Raises:
        SlideReadError: If the file is not an 8-bit grey/RGB(A) TIFF or cannot be read.
    """

    def __init__(self, path: str | os.PathLike, mpp: float | None = None) -> None:
        import tifffile

        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
            page = self._tif.pages.first
            shape, dtype = page.shape, page.dtype
        except Exception as e:
            raise SlideReadError(f"expected a readable TIFF, got {self.path}: {e}") from e
        if dtype != np.uint8 or len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] < 3):
            self._tif.close()
            raise SlideReadError(
                f"expected an 8-bit grey or RGB TIFF, got shape {shape} {dtype} in {self.path}"
            )
        self._page = page
        self.height, self.width = int(shape[0]), int(shape[1])
        self.mpp = mpp
        self._mm = None
        if page.is_contiguous and not page.is_tiled:
            try:
                self._mm = tifffile.memmap(self.path, page=0, mode="r")
            except Exception:
                self._mm = None
        if self._mm is None:
            self._rows_per_strip = page.rowsperstrip if not page.is_tiled else None

    def _rgb(self, a: np.ndarray) -> np.ndarray:
        if a.ndim == 2:
            return np.repeat(a[..., None], 3, axis=2)
        return a[..., :3]

    def read(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Pixels ``[y:y+h, x:x+w]`` RGB."""
        _check_region(self, y, x, h, w)
        if self._mm is not None:
            return np.ascontiguousarray(self._rgb(self._mm[y : y + h, x : x + w]))
        try:
            return np.ascontiguousarray(self._rgb(self._read_segments(y, x, h, w)))
        except Exception as e:
            raise SlideReadError(
                f"expected readable pixels at y={y} x={x} in {self.path}, got {e}"
            ) from e

    def _read_segments(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Decodes only the tiles/strips that intersect the region."""
        page = self._page
        fh = self._tif.filehandle
        samples = 1 if len(page.shape) == 2 else page.shape[2]
        out = np.zeros((h, w, samples), np.uint8)
        if page.is_tiled:
            th, tw = page.tilelength, page.tilewidth
            per_row = -(-self.width // tw)
        else:
            th, tw, per_row = page.rowsperstrip, self.width, 1
        for ty in range(y // th, (y + h - 1) // th + 1):
            for tx in range(x // tw, (x + w - 1) // tw + 1):
                k = ty * per_row + tx
                offset, count = page.dataoffsets[k], page.databytecounts[k]
                fh.seek(offset)
                data = fh.read(count)
                if len(data) != count:
                    raise SlideReadError(f"expected {count} bytes, got {len(data)} (truncated?)")
                seg, _, shape = page.decode(data, k)
                seg = np.asarray(seg).reshape(shape[1:])  # (depth, h, w, s) -> (h, w, s)
                if seg.ndim == 4:
                    seg = seg[0]
                sy, sx = ty * th, tx * tw
                y0, y1 = max(y, sy), min(y + h, sy + seg.shape[0], self.height)
                x0, x1 = max(x, sx), min(x + w, sx + seg.shape[1], self.width)
                out[y0 - y : y1 - y, x0 - x : x1 - x] = seg[y0 - sy : y1 - sy, x0 - sx : x1 - sx]
        return out[..., 0] if samples == 1 else out

    def thumbnail(self, max_side: int = 2048) -> np.ndarray:
        """Thumbnail with the longer side <= ``max_side``."""
        return _thumbnail_of(self, max_side)

    def identity(self) -> dict:
        """File name, size and a hash of its ends."""
        return _file_identity(self.path)

    def close(self) -> None:
        """Closes the file."""
        self._tif.close()
