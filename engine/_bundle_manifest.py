"""The ``model.json`` of a model bundle: its fields, reading it, checking its values.

The one place that knows the manifest's layout (see :mod:`hvx.bundle` for the
format) and its value ranges; :mod:`hvx.bundle` reads bundles with it and
:mod:`hvx._bundle_write` writes them. Free of torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BUNDLE_FORMAT",
    "DEFAULT_COLORS",
    "MANIFEST_FILE",
    "MAX_JSON_DEPTH",
    "MAX_MANIFEST_BYTES",
    "SCHEMA_VERSION",
    "VALUE_RANGES",
    "WEIGHTS_FILE",
    "check_values",
]

BUNDLE_FORMAT = "hvx-model-bundle"
SCHEMA_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "model.json"

#: The top-level fields of model.json, every one required.
FIELDS = frozenset(
    {
        "format",
        "schema_version",
        "hvx_version",
        "created",
        "architecture",
        "variant",
        "in_chans",
        "num_types",
        "class_names",
        "class_colors",
        "mpp",
        "preprocess",
        "postprocess",
        "weights",
        "provenance",
        "metrics",
    }
)

#: Default overlay colours (RGB) for type ids 1, 2, ... (cycled).
DEFAULT_COLORS = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (255, 0, 255),
    (0, 255, 255),
    (255, 128, 0),
    (128, 0, 255),
    (0, 128, 128),
    (128, 128, 0),
)


def check_classes(names: Any, colors: Any, num_types: int, where: str) -> tuple[tuple, tuple]:
    """``(names, colours)`` as tuples: one unique name and one RGB triple per type 1..C-1.

    Raises:
        ValueError: Naming the field (after ``where``), what was expected and what came.
    """
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"{where}class_names: expected a list of str, got {type(names).__name__}")
    names = tuple(names)
    if len(names) != num_types - 1 or not all(isinstance(n, str) and n for n in names):
        raise ValueError(
            f"{where}class_names: expected {num_types - 1} non-empty names (type ids "
            f"1..{num_types - 1}; 0 is background), got {list(names)!r}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"{where}class_names: expected unique names, got {list(names)!r}")
    if colors is None:
        colors = [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(len(names))]
    if isinstance(colors, str) or not isinstance(colors, Sequence) or len(colors) != len(names):
        raise ValueError(f"{where}class_colors: expected {len(names)} RGB triples, got {colors!r}")
    out = []
    for c in colors:
        ok = (
            isinstance(c, Sequence)
            and len(c) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
        )
        if not ok:
            raise ValueError(f"{where}class_colors: expected RGB ints in [0, 255], got {c!r}")
        out.append(tuple(c))
    return names, tuple(out)


def check_mpp(mpp: Any, where: str) -> float:
    """``mpp`` as a float; ValueError unless a finite positive number."""
    if (
        isinstance(mpp, bool)
        or not isinstance(mpp, int | float)
        or not (math.isfinite(mpp) and mpp > 0)
    ):
        raise ValueError(
            f"{where}mpp: expected a positive number of microns per pixel, got {mpp!r}"
        )
    return float(mpp)


def json_dict(value: Any, name: str) -> dict:
    """A copy of ``value`` (None -> {}); ValueError unless a JSON-serialisable dict."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected a dict, got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected JSON-serialisable values (no NaN/inf): {exc}") from exc
    return dict(value)


def require(d: dict, key: str, types: type | tuple[type, ...], where: str) -> Any:
    """``d[key]``; ValueError unless of ``types`` (a bool is not an int here)."""
    v = d[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ValueError(f"{where}{key}: expected {types}, got {v!r}")
    if not isinstance(v, types):
        raise ValueError(f"{where}{key}: expected {types}, got {type(v).__name__} {v!r}")
    return v


#: Largest model.json read (a bundle's is a few KiB).
MAX_MANIFEST_BYTES = 16 << 20
#: Deepest nesting of lists/dicts accepted in model.json.
MAX_JSON_DEPTH = 32
#: The one table of value ranges of a bundle: (section, key) -> (low, high, integer?).
#: Values outside them were accepted before and misbehaved (np_threshold 5.0 -> no
#: nuclei; opening_ksize 100001 -> hang; tile_size 1e9 -> 22 GB allocated).
VALUE_RANGES: dict[tuple[str, str], tuple[float, float, bool]] = {
    ("postprocess", "np_threshold"): (0, 1, False),
    ("postprocess", "marker_threshold"): (0, 1, False),
    ("postprocess", "min_object_size"): (0, 1_000_000, True),
    ("postprocess", "sobel_ksize"): (3, 31, True),
    ("postprocess", "opening_ksize"): (1, 63, True),
    ("preprocess", "clip_limit"): (1e-6, 1000.0, False),
    ("preprocess", "tile_size"): (1, 1024, True),
}
_GRID_MAX = 256  # preprocess.tile_grid entries


def read_manifest(mpath: Path) -> dict:
    """model.json as a dict: bounded size and depth, standard JSON numbers only."""
    size = mpath.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ValueError(
            f"{mpath}: expected at most {MAX_MANIFEST_BYTES >> 20} MiB, got {size / 2**20:.1f} MiB"
        )

    def no_constant(name: str):
        raise ValueError(f"expected finite numbers, got {name}")

    try:
        m = json.loads(mpath.read_text(), parse_constant=no_constant)
    except RecursionError:
        raise ValueError(f"{mpath}: expected JSON nested at most {MAX_JSON_DEPTH} deep") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{mpath}: not valid JSON ({exc})") from exc
    if not isinstance(m, dict):
        raise ValueError(f"{mpath}: expected a JSON object, got {type(m).__name__}")
    return m


def _walk(value: Any, key: str, depth: int, where: str) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{where}{key}: expected JSON nested at most {MAX_JSON_DEPTH} deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}{key}: expected finite numbers, got {value}")
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            _walk(v, f"{key}.{k}" if key else str(k), depth + 1, where)


def check_values(m: dict, where: str = "") -> None:
    """Validates a manifest's values in one place: depth, finiteness, ranges.

    Args:
        m: The parsed model.json.
        where: Prefix of error messages (the file).

    Raises:
        ValueError: Naming the field, the accepted range and the value found.
    """
    _walk(m, "", 0, where)
    for (section, key), (lo, hi, integer) in VALUE_RANGES.items():
        sec = m.get(section)
        if not isinstance(sec, dict) or sec.get(key) is None:
            continue
        v = sec[key]
        ok = isinstance(v, int | float) and not isinstance(v, bool) and lo <= v <= hi
        if ok and integer:
            ok = float(v).is_integer()
        if not ok:
            kind = "an integer" if integer else "a number"
            raise ValueError(f"{where}{section}.{key}: expected {kind} in [{lo}, {hi}], got {v!r}")
    grid = (m.get("preprocess") or {}).get("tile_grid")
    if isinstance(grid, list) and any(
        isinstance(g, int | float) and not 1 <= g <= _GRID_MAX for g in grid
    ):
        raise ValueError(
            f"{where}preprocess.tile_grid: expected ints in [1, {_GRID_MAX}], got {grid}"
        )
