"""How one nucleus becomes a CSV row or a GeoJSON feature: the one formatter of hvx.io.

Both the whole-image writers (:mod:`hvx.io.writers`) and the streamed ones
(:mod:`hvx.io.streams`) format nuclei here, so a CSV row or a GeoJSON feature of
a tile and of a slide are the same bytes for the same nucleus.

A *table* is any object with ``len()`` and these per-nucleus columns (both
``hvx.results.NucleusTable`` and the tiled path's ``hvx.tiling.Nuclei`` have them):
``id`` ``ndarray[K]`` int, ``type`` ``ndarray[K]`` int (0 = background),
``type_prob`` ``ndarray[K]`` float, ``centroid`` ``ndarray[K, 2]`` float (y, x),
``bbox`` ``ndarray[K, 4]`` int (rmin, cmin, rmax, cmax; max exclusive), ``area``
``ndarray[K]`` int and ``contours`` (``K`` arrays ``ndarray[K_i, 2]`` int of
(x, y) points). Extra integer columns (the tiled path's ``cut``) can be appended
to CSV rows by name.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import numpy as np

__all__ = [
    "CSV_COLUMNS",
    "class_color",
    "class_name",
    "csv_cell",
    "csv_header",
    "csv_rows",
    "geojson_features",
]

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

#: Columns of every CSV table hvx writes (the streamed one appends ``cut``).
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


def class_color(type_id: int, class_colors: Sequence[Sequence[int]] | None) -> tuple[int, ...]:
    """RGB of type id ``type_id``: the bundle's colour, else a fixed palette; white for 0."""
    if type_id <= 0:
        return _UNCLASSIFIED
    if class_colors is not None and type_id <= len(class_colors):
        return tuple(int(c) for c in class_colors[type_id - 1])
    return _PALETTE[(type_id - 1) % len(_PALETTE)]


def _csv_writer(buf: io.StringIO):
    return csv.writer(buf, lineterminator="\n")


def csv_header(extra: Sequence[str] = ()) -> str:
    """The header line: :data:`CSV_COLUMNS`, then ``extra`` column names; newline-ended."""
    buf = io.StringIO()
    _csv_writer(buf).writerow((*CSV_COLUMNS, *extra))
    return buf.getvalue()


def csv_rows(table, class_names: Sequence[str], *, extra: Sequence[str] = ()) -> str:
    """One newline-ended CSV line per nucleus of ``table`` (no header).

    ``class`` is the class name ("" for background type 0, formula-neutralised by
    :func:`csv_cell`), ``probability`` the type probability (6 significant
    digits), the centroid (y, x) with 3 decimals, bbox max exclusive.

    Args:
        table: A table (module docs).
        class_names: Names of type ids 1..C-1.
        extra: Names of further integer columns of ``table`` appended to each row
            (e.g. ``("cut",)``).

    Returns:
        The rows as text (empty for an empty table).
    """
    buf = io.StringIO()
    writer = _csv_writer(buf)
    more = [getattr(table, name) for name in extra]
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
                *(int(col[k]) for col in more),
            ]
        )
    return buf.getvalue()


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
        table: A table (module docs).
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
            props["classification"] = {"name": name, "color": list(class_color(t, class_colors))}
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
