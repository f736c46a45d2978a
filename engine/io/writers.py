"""Whole-image result writers: .npy maps, CoNiC arrays, QuPath GeoJSON, CSV tables, overlays.

What ``hvx infer`` writes per image. Every file goes through
:func:`hvx.io.atomic.atomic_write` with ``durable=False``: atomic (a temp file in
the destination folder, then ``os.replace``, never through a symlink), so an
interrupted run never leaves a half-written result that a re-run would mistake
for a finished one; not fsynced, because one fsync per file would cost more than
a small image's inference (see :mod:`hvx.io.atomic` for the policy).

Tables are ``hvx.results.NucleusTable`` objects (any object with the same
columns works, see :mod:`hvx.io.rows`, which formats every CSV row and GeoJSON
feature): ``id``, ``type``, ``type_prob``, ``centroid`` (y, x), ``bbox`` (rmin,
cmin, rmax, cmax; max exclusive), ``area`` and ``contours`` (x, y points).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hvx.io.atomic import atomic_write
from hvx.io.rows import (
    CSV_COLUMNS,
    class_color,
    class_name,
    csv_cell,
    csv_header,
    csv_rows,
    geojson_features,
)

__all__ = [
    "CSV_COLUMNS",
    "FORMATS",
    "class_name",
    "csv_cell",
    "geojson_features",
    "output_paths",
    "write_conic",
    "write_csv",
    "write_geojson",
    "write_npy",
    "write_overlay",
]

#: Output formats of ``hvx infer --format``.
FORMATS = ("npy", "conic", "geojson", "csv", "overlay")


def output_paths(out_dir: str | os.PathLike, stem: str, formats: Sequence[str]) -> list[Path]:
    """The files ``hvx infer`` writes for one image (all must exist to count as finished).

    Raises:
        ValueError: For a format not in :data:`FORMATS`.
    """
    out = Path(out_dir)
    names = {
        "npy": [f"{stem}_inst.npy", f"{stem}_type.npy"],
        "conic": [f"{stem}_conic.npy"],
        "geojson": [f"{stem}.geojson"],
        "csv": [f"{stem}.csv"],
        "overlay": [f"{stem}_overlay.png"],
    }
    bad = [f for f in formats if f not in names]
    if bad:
        raise ValueError(f"expected formats from {list(FORMATS)}, got {bad}")
    return [out / n for f in formats for n in names[f]]


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Writes one numeric array as ``.npy`` (no pickle) atomically."""
    array = np.asarray(array)
    if array.dtype == object:
        raise TypeError(f"expected a numeric array, got dtype {array.dtype}")
    return atomic_write(path, _npy_bytes(array), durable=False)


def _check_maps(inst: np.ndarray, type_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    inst, type_map = np.asarray(inst), np.asarray(type_map)
    if inst.ndim != 2 or inst.shape != type_map.shape:
        raise ValueError(
            "expected inst and type maps of one (H, W) shape, "
            f"got {inst.shape} and {type_map.shape}"
        )
    return inst, type_map


def write_conic(path: str | os.PathLike, inst: np.ndarray, type_map: np.ndarray) -> Path:
    """Writes the CoNiC ``ndarray[H, W, 2] int32`` (channel 0 instance ids, 1 class)."""
    inst, type_map = _check_maps(inst, type_map)
    return write_npy(path, np.stack([inst, type_map], axis=-1).astype(np.int32))


def write_geojson(
    path: str | os.PathLike,
    table,
    class_names: Sequence[str],
    class_colors: Sequence[Sequence[int]] | None = None,
    *,
    object_type: str = "detection",
    offset: tuple[int, int] = (0, 0),
) -> Path:
    """Writes a QuPath-loadable GeoJSON FeatureCollection (see :func:`geojson_features`)."""
    doc = {
        "type": "FeatureCollection",
        "features": geojson_features(
            table, class_names, class_colors, object_type=object_type, offset=offset
        ),
    }
    return atomic_write(path, json.dumps(doc, separators=(",", ":")) + "\n", durable=False)


def write_csv(path: str | os.PathLike, table, class_names: Sequence[str]) -> Path:
    """Writes one row per nucleus with the columns of :data:`CSV_COLUMNS`.

    ``class`` is the class name ("" for background type 0), ``probability`` the
    type probability, centroid in (y, x) pixels, bbox max exclusive.
    """
    text = csv_header() + csv_rows(table, class_names)
    return atomic_write(path, text, durable=False)


def write_overlay(
    path: str | os.PathLike,
    image: np.ndarray,
    table,
    class_colors: Sequence[Sequence[int]] | None = None,
    *,
    thickness: int = 1,
) -> Path:
    """Draws each nucleus contour in its class colour on the image; writes a PNG.

    Args:
        path: Output ``.png``.
        image: ``ndarray[H, W, 3] uint8`` RGB.
        table: A ``NucleusTable`` of that image.
        class_colors: RGB per class (default palette); type 0 is drawn white.
        thickness: Line width in pixels.

    Raises:
        ValueError: If image is not (H, W, 3) uint8.
    """
    import cv2

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    canvas = np.ascontiguousarray(image[..., ::-1])  # BGR for OpenCV
    for k in range(len(table)):
        r, g, b = class_color(int(table.type[k]), class_colors)
        pts = np.asarray(table.contours[k], dtype=np.int32).reshape(-1, 1, 2)
        if len(pts):
            cv2.polylines(canvas, [pts], True, (b, g, r), thickness, lineType=cv2.LINE_8)
    ok, png = cv2.imencode(".png", canvas)
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode the overlay for {path}")
    return atomic_write(path, png.tobytes(), durable=False)
