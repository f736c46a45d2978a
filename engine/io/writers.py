"""Result writers: .npy maps, CoNiC arrays, QuPath GeoJSON, CSV tables, overlay PNGs.

Every file is written atomically (a temp file in the destination folder, then
``os.replace``), so an interrupted run never leaves a half-written result that a
re-run would mistake for a finished one.

Tables are ``hvx.results.NucleusTable`` objects (any object with the same
fields works): ``id``, ``type``, ``type_prob``, ``centroid`` (y, x), ``bbox``
(rmin, cmin, rmax, cmax; max exclusive), ``area`` and ``contours`` (x, y points).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "FORMATS",
    "atomic_write",
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

#: Used when a bundle gives no colours (RGB; tab10-like, readable on H&E).
_PALETTE = (
    (255, 0, 0),
    (0, 200, 0),
    (0, 90, 255),
    (255, 200, 0),
    (255, 0, 255),
    (0, 220, 220),
    (255, 128, 0),
    (128, 0, 255),
)
_UNCLASSIFIED = (255, 255, 255)

CSV_COLUMNS = (
    "id",
    "class_id",
    "class",
    "probability",
    "centroid_y",
    "centroid_x",
    "area",
    "bbox_rmin",
    "bbox_cmin",
    "bbox_rmax",
    "bbox_cmax",
)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Writes ``data`` to ``path`` through a temp file in the same folder + ``os.replace``.

    The file gets mode 0o644, like a file opened for writing under the usual
    umask: mkstemp's 0o600 would keep other users of a shared server (a QuPath
    user opening the GeoJSON, a colleague loading a bundle) from reading it.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            os.fchmod(f.fileno(), 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    return atomic_write(path, _npy_bytes(array))


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


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str) -> str:
    """A text cell a spreadsheet will not run as a formula (OWASP CSV injection).

    Cells starting with ``= + - @`` (or a tab / carriage return) get a leading
    single quote, which spreadsheets show as text and hide.
    """
    text = str(text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def class_name(type_id: int, class_names: Sequence[str]) -> str | None:
    """Name of type id ``type_id`` (1..C-1 index ``class_names``); None for background 0."""
    if type_id <= 0:
        return None
    if type_id > len(class_names):
        return f"type_{type_id}"
    return str(class_names[type_id - 1])


def _class_color(type_id: int, class_colors: Sequence[Sequence[int]] | None) -> tuple[int, ...]:
    if type_id <= 0:
        return _UNCLASSIFIED
    if class_colors is not None and type_id <= len(class_colors):
        return tuple(int(c) for c in class_colors[type_id - 1])
    return _PALETTE[(type_id - 1) % len(_PALETTE)]


def _ring(contour: np.ndarray, bbox: np.ndarray, offset: tuple[int, int]) -> list[list[int]]:
    """Closed (x, y) ring; a degenerate contour (< 3 distinct points) becomes its pixel box."""
    pts = np.asarray(contour, dtype=np.int64).reshape(-1, 2)
    if len(np.unique(pts, axis=0)) < 3:
        rmin, cmin, rmax, cmax = (int(v) for v in bbox)
        pts = np.array([[cmin, rmin], [cmax, rmin], [cmax, rmax], [cmin, rmax]], dtype=np.int64)
    pts = pts + np.asarray(offset, dtype=np.int64)
    ring = pts.tolist()
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    return ring


def geojson_features(
    table,
    class_names: Sequence[str],
    class_colors: Sequence[Sequence[int]] | None = None,
    *,
    object_type: str = "detection",
    offset: tuple[int, int] = (0, 0),
) -> list[dict]:
    """One QuPath GeoJSON Feature (Polygon) per nucleus of ``table``.

    Properties follow QuPath's own GeoJSON (0.4 and later): ``objectType``,
    ``classification`` ``{"name", "color": [r, g, b]}`` (absent for type 0),
    and ``measurements`` as a name -> number mapping.

    Args:
        table: A ``NucleusTable``.
        class_names: Names of type ids 1..C-1.
        class_colors: RGB per class name (default: a fixed palette).
        object_type: ``"detection"`` (default; light-weight in QuPath) or ``"annotation"``.
        offset: (x, y) added to every coordinate (tile origin in a larger image).

    Returns:
        Feature dicts with closed rings of (x, y) integer pixel coordinates.

    Raises:
        ValueError: For an unknown object_type.
    """
    if object_type not in ("detection", "annotation"):
        raise ValueError(f"expected object_type 'detection' or 'annotation', got {object_type!r}")
    features = []
    for k in range(len(table)):
        t = int(table.type[k])
        props: dict = {"objectType": object_type}
        name = class_name(t, class_names)
        if name is not None:
            props["classification"] = {"name": name, "color": list(_class_color(t, class_colors))}
        props["measurements"] = {
            "hvx id": int(table.id[k]),
            "Class probability": round(float(table.type_prob[k]), 6),
            "Area px^2": int(table.area[k]),
        }
        features.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [_ring(table.contours[k], table.bbox[k], offset)],
                },
                "properties": props,
            }
        )
    return features


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
    return atomic_write(path, json.dumps(doc, separators=(",", ":")) + "\n")


def write_csv(path: str | os.PathLike, table, class_names: Sequence[str]) -> Path:
    """Writes one row per nucleus with the columns of :data:`CSV_COLUMNS`.

    ``class`` is the class name ("" for background type 0), ``probability`` the
    type probability, centroid in (y, x) pixels, bbox max exclusive.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for k in range(len(table)):
        t = int(table.type[k])
        cy, cx = (float(v) for v in table.centroid[k])
        writer.writerow(
            [
                int(table.id[k]),
                t,
                csv_cell(class_name(t, class_names) or ""),
                f"{float(table.type_prob[k]):.6g}",
                f"{cy:.3f}",
                f"{cx:.3f}",
                int(table.area[k]),
                *(int(v) for v in table.bbox[k]),
            ]
        )
    return atomic_write(path, buf.getvalue())


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
        r, g, b = _class_color(int(table.type[k]), class_colors)
        pts = np.asarray(table.contours[k], dtype=np.int32).reshape(-1, 1, 2)
        if len(pts):
            cv2.polylines(canvas, [pts], True, (b, g, r), thickness, lineType=cv2.LINE_8)
    ok, png = cv2.imencode(".png", canvas)
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode the overlay for {path}")
    return atomic_write(path, png.tobytes())
