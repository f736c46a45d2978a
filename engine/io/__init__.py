"""Reading images and writing results: what ``hvx infer`` and users' scripts use.

- :mod:`hvx.io.readers`: PNG / JPEG / TIFF tiles as uint8 RGB, folder expansion.
- :mod:`hvx.io.writers`: .npy maps, CoNiC arrays, QuPath GeoJSON, CSV tables,
  overlay PNGs, every file written atomically (temp file + ``os.replace``).
"""

from hvx.io.readers import IMAGE_SUFFIXES, ImageReadError, find_images, read_image
from hvx.io.writers import (
    FORMATS,
    atomic_write,
    geojson_features,
    write_conic,
    write_csv,
    write_geojson,
    write_npy,
    write_overlay,
)

__all__ = [
    "FORMATS",
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "atomic_write",
    "find_images",
    "geojson_features",
    "read_image",
    "write_conic",
    "write_csv",
    "write_geojson",
    "write_npy",
    "write_overlay",
]
