"""hvx's I/O: reading images and slides, writing results, the one atomic-write helper.

- :mod:`hvx.io.readers`: PNG / JPEG / TIFF tiles as uint8 RGB, folder expansion.
- :mod:`hvx.io.slides`: large images and slides read region by region
  (:func:`open_image`; readers in :mod:`hvx.io.region_readers` and
  :mod:`hvx.io.openslide_reader`) and the tissue mask.
- :mod:`hvx.io.rows`: how a nucleus becomes a CSV row or a GeoJSON feature (once).
- :mod:`hvx.io.writers`: whole-image results (.npy maps, CoNiC arrays, QuPath
  GeoJSON, CSV tables, overlay PNGs).
- :mod:`hvx.io.streams`: streamed, resumable GeoJSON / CSV / label TIFF of tiled runs.
- :mod:`hvx.io.atomic`: every file hvx writes goes through it (temp file + rename,
  never through a symlink, fsynced unless a caller opts out; the policy is there).
"""

from hvx.io.atomic import atomic_file, atomic_path, atomic_write
from hvx.io.readers import IMAGE_SUFFIXES, ImageReadError, find_images, read_image
from hvx.io.slides import SlideReadError, open_image, tissue_mask
from hvx.io.writers import (
    FORMATS,
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
    "SlideReadError",
    "atomic_file",
    "atomic_path",
    "atomic_write",
    "find_images",
    "geojson_features",
    "open_image",
    "read_image",
    "tissue_mask",
    "write_conic",
    "write_csv",
    "write_geojson",
    "write_npy",
    "write_overlay",
]
