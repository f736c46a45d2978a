"""Readers for large images and whole slides, read region by region; tissue masks.

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
a target mpp (resampling when no level matches); :func:`open_image` picks one.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

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


#: A slide whose smallest level has more pixels (or more than (2 * max_side)^2) is
#: thumbnailed by strided band reads.
_THUMB_LEVEL_PIXELS = 4096 * 4096
#: Most bytes (RGBA) one band read of a strided thumbnail decodes at once.
_THUMB_BAND_BYTES = 32 << 20


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
    from hvx.io.readers import MAX_DECODE_PIXELS, image_size

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
