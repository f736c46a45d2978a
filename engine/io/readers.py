"""Image readers: PNG, JPEG and TIFF tiles as uint8 RGB ``ndarray[H, W, 3]``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "find_images", "image_size", "read_image"]

#: File suffixes (lower case) that ``find_images`` picks up in folders.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


class ImageReadError(ValueError):
    """An image file is missing, unreadable or not an 8-bit grey/RGB/RGBA image."""


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(height, width)`` from the file header (pixels are not decoded); None if unreadable."""
    p = Path(path)
    try:
        if p.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(p) as tif:
                shape = tif.pages.first.shape
            return int(shape[0]), int(shape[1])
        from PIL import Image

        with Image.open(p) as im:  # header only (no decompression-bomb check needed)
            w, h = im.size
        return int(h), int(w)
    except Exception:
        return None


#: Largest image ``read_image`` decodes whole (OpenCV's own default limit, 2^30 px).
MAX_DECODE_PIXELS = 1 << 30


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads a PNG / JPEG / TIFF file as RGB.

    Grey images are repeated to three channels and an alpha channel is dropped.

    Args:
        path: The image file.

    Returns:
        ``ndarray[H, W, 3] uint8``, RGB, C-contiguous.

    Raises:
        ImageReadError: If the file is missing, cannot be decoded, or is not 8-bit
            (16-bit and float images need an explicit, user-chosen conversion).
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"expected an image file, got a missing path: {path}")
    size = image_size(path)
    if size is not None and size[0] * size[1] > MAX_DECODE_PIXELS:
        raise ImageReadError(
            f"expected an image of at most {MAX_DECODE_PIXELS} pixels to decode whole, got "
            f"{size[1]} x {size[0]} in {path} (a tiled TIFF is read region by region)"
        )
    data = np.fromfile(path, dtype=np.uint8)  # also works for non-ASCII paths
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as e:
        raise ImageReadError(f"expected a decodable image, got {path}: {e.err}") from None
    if img is None:
        raise ImageReadError(
            f"expected a PNG, JPEG or TIFF image, got a file OpenCV cannot decode: {path}"
        )
    if img.dtype != np.uint8:
        raise ImageReadError(f"expected an 8-bit image, got {img.dtype} in {path}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        raise ImageReadError(f"expected a grey, RGB or RGBA image, got shape {img.shape} in {path}")
    return np.ascontiguousarray(img)


def find_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expands files and folders into the image files to process.

    Folders contribute their files with a suffix in :data:`IMAGE_SUFFIXES`
    (not recursive), sorted by name; explicit files are kept whatever their
    suffix (a bad one is reported when read). Duplicates are dropped, order kept.

    Raises:
        FileNotFoundError: If an input does not exist.
    """
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found.extend(
                sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            )
        elif p.exists():
            found.append(p)
        else:
            raise FileNotFoundError(f"expected an image file or a folder, got a missing path: {p}")
    seen: set[Path] = set()
    unique = []
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique
