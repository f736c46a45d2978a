"""Model bundles: the folder ``hvx-train`` writes and ``hvx.Engine`` loads (DESIGN §4).

A bundle is a folder with two files:

* ``weights.safetensors``: the HoVerNet state dict (float32, float16 or bfloat16
  storage; never pickle). With float16 / bfloat16 storage, a tensor whose values
  exceed that type's range (e.g. a BatchNorm running variance above 65504) is
  kept float32 and listed in ``weights.float32_tensors``;
* ``model.json``: everything needed to rebuild and use the model::

    {
      "format": "hvx-model-bundle", "schema_version": 1,
      "hvx_version": "0.1.0", "created": "2026-11-27T10:00:00+00:00",
      "architecture": {"name": ..., "encoder": ..., "stem": ..., "decoder": ...,
                       "size_multiple": ...},
      "variant": "convnext_small", "in_chans": 6, "num_types": 5,
      "class_names": [...], "class_colors": [[r, g, b], ...], "mpp": 0.5,
      "preprocess": PreprocessConfig.to_dict(), "postprocess": PostprocessConfig.to_dict(),
      "weights": {"file": "weights.safetensors", "dtype": "float16",
                  "bytes": ..., "sha256": ..., "tensors": ...,
                  "float32_tensors": [...]},  # only when some are kept float32
      "provenance": {...}, "metrics": {...}
    }

Reading is strict: unknown or missing fields, another schema version, a
truncated or corrupt weights file (size and SHA-256 are recorded), tensors
whose names, shapes or dtypes disagree with the architecture all raise
``ValueError`` naming the problem. Writing is atomic: the bundle is written
into a temporary sibling folder and renamed into place.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hvx._version import __version__
from hvx.model import HoVerNet, OfficialHoVerNet, create_model, get_variant
from hvx.model._signature import reference_state

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST_FILE",
    "SCHEMA_VERSION",
    "WEIGHTS_FILE",
    "ModelBundle",
    "import_hovernet",
    "load_bundle",
    "save_bundle",
]

BUNDLE_FORMAT = "hvx-model-bundle"
SCHEMA_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "model.json"

_FIELDS = frozenset(
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
_WEIGHT_FIELDS = frozenset({"file", "dtype", "bytes", "sha256", "tensors"})
_WEIGHT_OPTIONAL = frozenset({"float32_tensors"})
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_ST_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
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


def _config_classes() -> tuple[type, type]:
    """(PreprocessConfig, PostprocessConfig), imported lazily."""
    from hvx.postprocess import PostprocessConfig
    from hvx.preprocess import PreprocessConfig

    return PreprocessConfig, PostprocessConfig


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    """A validated model bundle (see the module docstring for the file layout).

    Attributes:
        path: Bundle folder.
        variant: HoVerNet variant name (``hvx.model.list_variants()``).
        in_chans: Network input channels (6 or 3), equals ``preprocess.in_chans``.
        num_types: Type classes including background (type 0).
        class_names: Names of type ids ``1..num_types-1``.
        class_colors: RGB colour per class name, ints in [0, 255].
        mpp: Microns per pixel the model was trained at.
        preprocess: The input transform (``hvx.preprocess.PreprocessConfig``).
        postprocess: Post-processing parameters (``hvx.postprocess.PostprocessConfig``).
        provenance: Training provenance (config, data, seed, versions, ...).
        metrics: Validation metrics (e.g. ``{"pq": ..., "mpq_plus": ...}``).
        weights_dtype: Storage dtype of the weights (``"float32"``, ``"float16"``, ``"bfloat16"``).
        float32_tensors: Tensors stored float32 despite ``weights_dtype`` (beyond
            its range), sorted; empty for most bundles.
    """

    path: Path
    variant: str
    in_chans: int
    num_types: int
    class_names: tuple[str, ...]
    class_colors: tuple[tuple[int, int, int], ...]
    mpp: float
    preprocess: Any
    postprocess: Any
    provenance: dict
    metrics: dict
    weights_dtype: str = "float32"
    float32_tensors: tuple[str, ...] = ()

    def build_model(
        self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> HoVerNet:
        """Builds the network with the bundle's weights.

        Args:
            device: Target device.
            dtype: Parameter dtype (float32, float16 or bfloat16); fp16-stored
                weights are widened exactly when ``dtype`` is float32.

        Returns:
            The model in eval mode on ``device``.

        Raises:
            ValueError: the weights file changed since loading and no longer fits.
        """
        if dtype not in _DTYPES.values():
            raise ValueError(f"expected dtype float32, float16 or bfloat16, got {dtype}")
        state = _read_weights(self.path / WEIGHTS_FILE)
        with torch.device("meta"):
            model = create_model(self.variant, in_chans=self.in_chans, num_types=self.num_types)
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as exc:
            raise ValueError(
                f"{self.path / WEIGHTS_FILE} does not fit {self.variant!r}: {exc}"
            ) from exc
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left:
            raise ValueError(f"{self.path / WEIGHTS_FILE} lacks tensors {left[:5]}")
        return model.to(device=device, dtype=dtype).eval()


def _check_classes(names: Any, colors: Any, num_types: int, where: str) -> tuple[tuple, tuple]:
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


def _check_mpp(mpp: Any, where: str) -> float:
    if (
        isinstance(mpp, bool)
        or not isinstance(mpp, int | float)
        or not (math.isfinite(mpp) and mpp > 0)
    ):
        raise ValueError(
            f"{where}mpp: expected a positive number of microns per pixel, got {mpp!r}"
        )
    return float(mpp)


def _dtype_name(dtype: torch.dtype) -> str:
    for name, dt in _DTYPES.items():
        if dt == dtype:
            return name
    raise ValueError(f"expected weights_dtype float32, float16 or bfloat16, got {dtype}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_dict(value: Any, name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected a dict, got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected JSON-serialisable values (no NaN/inf): {exc}") from exc
    return dict(value)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_bundle(
    out_dir: str | os.PathLike,
    model: HoVerNet,
    *,
    class_names: Sequence[str],
    class_colors: Sequence[Sequence[int]] | None = None,
    mpp: float,
    preprocess: Any,
    postprocess: Any,
    provenance: dict | None = None,
    metrics: dict | None = None,
    weights_dtype: torch.dtype = torch.float32,
) -> Path:
    """Writes a model bundle atomically.

    The files are written into a temporary sibling folder, flushed, and the
    folder renamed to ``out_dir``. An existing bundle at ``out_dir`` is replaced;
    an existing non-bundle, non-empty folder is refused.

    Args:
        out_dir: Bundle folder to create.
        model: The trained :class:`~hvx.model.HoVerNet`.
        class_names: Names of type ids ``1..num_types-1``.
        class_colors: RGB per class (default: a fixed palette).
        mpp: Microns per pixel of the training data.
        preprocess: ``PreprocessConfig`` used in training (its ``in_chans`` must
            equal the model's).
        postprocess: ``PostprocessConfig`` to use at inference.
        provenance: JSON-ready training provenance.
        metrics: JSON-ready validation metrics.
        weights_dtype: Storage dtype: float32, float16 (half the size) or bfloat16.
            A floating tensor that overflows it (finite in float32, not after
            the cast) is kept float32 and listed in ``weights.float32_tensors``.

    Returns:
        ``Path(out_dir)``.

    Raises:
        TypeError: ``model`` is not a HoVerNet.
        ValueError: inconsistent metadata, or ``out_dir`` is a non-empty folder
            that is not a bundle.
    """
    if not isinstance(model, HoVerNet | OfficialHoVerNet):
        raise TypeError(f"expected a hvx.model.HoVerNet, got {type(model).__name__}")
    out_dir = Path(out_dir)
    names, colors = _check_classes(class_names, class_colors, model.num_types, "")
    mpp = _check_mpp(mpp, "")
    dtype_name = _dtype_name(weights_dtype)
    for obj, label in ((preprocess, "preprocess"), (postprocess, "postprocess")):
        if not callable(getattr(obj, "to_dict", None)):
            raise TypeError(f"{label}: expected a config with to_dict(), got {type(obj).__name__}")
    pre_in = getattr(preprocess, "in_chans", None)
    if pre_in != model.in_chans:
        raise ValueError(
            f"preprocess: expected a config producing {model.in_chans} channels for the "
            f"model, got in_chans={pre_in}"
        )
    provenance = _json_dict(provenance, "provenance")
    metrics = _json_dict(metrics, "metrics")
    state, kept32 = {}, []
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        if v.is_floating_point():
            w = v.to(weights_dtype)
            if not bool(torch.isfinite(w).all()) and bool(torch.isfinite(v).all()):
                w = v.to(torch.float32)  # beyond the storage type's range
                kept32.append(k)
            v = w
        state[k] = v.contiguous()

    if out_dir.exists() and not (
        out_dir.is_dir() and ((out_dir / MANIFEST_FILE).is_file() or not any(out_dir.iterdir()))
    ):
        raise ValueError(f"refusing to overwrite {out_dir}: it exists and is not an hvx bundle")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        from safetensors.torch import save_file

        wpath = tmp / WEIGHTS_FILE
        save_file(state, str(wpath), metadata={"format": "pt", "hvx_variant": model.variant})
        _fsync(wpath)
        manifest = {
            "format": BUNDLE_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "hvx_version": __version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "architecture": model.spec.to_dict(),
            "variant": model.variant,
            "in_chans": model.in_chans,
            "num_types": model.num_types,
            "class_names": list(names),
            "class_colors": [list(c) for c in colors],
            "mpp": mpp,
            "preprocess": preprocess.to_dict(),
            "postprocess": postprocess.to_dict(),
            "weights": {
                "file": WEIGHTS_FILE,
                "dtype": dtype_name,
                "bytes": wpath.stat().st_size,
                "sha256": _sha256(wpath),
                "tensors": len(state),
                **({"float32_tensors": sorted(kept32)} if kept32 else {}),
            },
            "provenance": provenance,
            "metrics": metrics,
        }
        mpath = tmp / MANIFEST_FILE
        mpath.write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
        _fsync(mpath)
        # mkdtemp makes the folder owner-only and safetensors its file likewise; a
        # bundle is meant to be shared (lab servers, the package), so use the
        # usual modes.
        os.chmod(tmp, 0o755)
        os.chmod(wpath, 0o644)
        os.chmod(mpath, 0o644)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / "b")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _config_from_dict(cls: type, d: dict, where: str) -> Any:
    """``cls.from_dict(d)``, requiring exactly the keys ``cls().to_dict()`` writes.

    The bundle is stricter than a lenient ``from_dict``: a missing key would
    silently take today's default, which may differ from what was trained.
    """
    expected = set(cls().to_dict())
    unknown, missing = sorted(set(d) - expected), sorted(expected - set(d))
    if unknown or missing:
        raise ValueError(f"{where}: unknown keys {unknown}, missing keys {missing}")
    try:
        return cls.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: unreadable safetensors file ({exc})") from exc


def _require(d: dict, key: str, types: type | tuple[type, ...], where: str) -> Any:
    v = d[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ValueError(f"{where}{key}: expected {types}, got {v!r}")
    if not isinstance(v, types):
        raise ValueError(f"{where}{key}: expected {types}, got {type(v).__name__} {v!r}")
    return v


def _check_weights(
    path: Path, info: dict, model_state: dict[str, torch.Tensor]
) -> tuple[str, tuple[str, ...]]:
    """Validates size, hash, header, names, shapes and dtypes of the weights file.

    Returns:
        ``(storage dtype name, names of the tensors kept float32)``.
    """
    from safetensors import SafetensorError, safe_open

    where = f"{path / MANIFEST_FILE}: weights."
    if not isinstance(info, dict) or not (
        _WEIGHT_FIELDS <= set(info) <= _WEIGHT_FIELDS | _WEIGHT_OPTIONAL
    ):
        got = sorted(info) if isinstance(info, dict) else info
        raise ValueError(
            f"{where[:-1]}: expected keys {sorted(_WEIGHT_FIELDS)} (optional "
            f"{sorted(_WEIGHT_OPTIONAL)}), got {got}"
        )
    if info["file"] != WEIGHTS_FILE:
        raise ValueError(f"{where}file: expected {WEIGHTS_FILE!r}, got {info['file']!r}")
    if info["dtype"] not in _DTYPES:
        raise ValueError(f"{where}dtype: expected one of {list(_DTYPES)}, got {info['dtype']!r}")
    kept32 = _check_kept32(info, model_state, where)
    wpath = path / WEIGHTS_FILE
    if not wpath.is_file():
        raise ValueError(f"{path}: missing {WEIGHTS_FILE}")
    size = wpath.stat().st_size
    if size != info["bytes"]:
        raise ValueError(
            f"{wpath}: truncated or altered: expected {info['bytes']} bytes, got {size}"
        )
    digest = _sha256(wpath)
    if digest != info["sha256"]:
        raise ValueError(f"{wpath}: corrupt: SHA-256 {digest} differs from model.json")
    try:
        with safe_open(str(wpath), framework="pt") as f:
            header = {}
            for k in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                sl = f.get_slice(k)
                header[k] = (sl.get_dtype(), tuple(sl.get_shape()))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{wpath}: unreadable safetensors file ({exc})") from exc
    missing = sorted(set(model_state) - set(header))
    unexpected = sorted(set(header) - set(model_state))
    if missing or unexpected:
        raise ValueError(
            f"{wpath}: tensors do not match the architecture: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''} ({len(missing)}), unexpected "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''} ({len(unexpected)})"
        )
    want = _ST_DTYPES[info["dtype"]]
    for k, ref in model_state.items():
        dt, shape = header[k]
        if shape != tuple(ref.shape):
            raise ValueError(
                f"{wpath}: shape mismatch for {k}: expected {tuple(ref.shape)} for the "
                f"architecture, got {shape}"
            )
        expect = "F32" if k in kept32 else want
        if ref.is_floating_point() and dt != expect:
            raise ValueError(f"{wpath}: {k} is stored as {dt}, model.json says {expect}")
    return info["dtype"], tuple(sorted(kept32))


def _check_kept32(info: dict, model_state: dict[str, torch.Tensor], where: str) -> set[str]:
    """The tensors ``weights.float32_tensors`` says are stored float32 (may be none)."""
    if "float32_tensors" not in info:
        return set()
    names = info["float32_tensors"]
    if info["dtype"] == "float32":
        raise ValueError(f"{where}float32_tensors: expected only with float16 or bfloat16 storage")
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) for n in names)
        or names != sorted(set(names))
    ):
        raise ValueError(
            f"{where}float32_tensors: expected a non-empty sorted list of unique tensor "
            f"names, got {names!r}"
        )
    bad = [n for n in names if n not in model_state or not model_state[n].is_floating_point()]
    if bad:
        raise ValueError(
            f"{where}float32_tensors: expected floating tensors of the architecture, got {bad}"
        )
    return set(names)


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


def _read_manifest(mpath: Path) -> dict:
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


def load_bundle(path: str | os.PathLike) -> ModelBundle:
    """Reads and validates a model bundle (no pickle; the weights are checked, not loaded).

    Args:
        path: Bundle folder (with ``model.json`` and ``weights.safetensors``).

    Returns:
        The :class:`ModelBundle`; ``bundle.build_model()`` gives the network.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a bundle; unknown, missing or invalid fields; another
            schema version; truncated/corrupt weights; weights that do not fit the
            architecture.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model bundle not found: {path}")
    mpath = path / MANIFEST_FILE
    if not path.is_dir() or not mpath.is_file():
        raise ValueError(
            f"expected a model bundle folder with {MANIFEST_FILE} and {WEIGHTS_FILE}, got {path}"
        )
    m = _read_manifest(mpath)
    if m.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{mpath}: expected format {BUNDLE_FORMAT!r}, got {m.get('format')!r}")
    if m.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{mpath}: unsupported schema_version {m.get('schema_version')!r}; this hvx "
            f"({__version__}) reads schema_version {SCHEMA_VERSION}"
        )
    unknown, missing = sorted(set(m) - _FIELDS), sorted(_FIELDS - set(m))
    if unknown or missing:
        raise ValueError(f"{mpath}: unknown fields {unknown}, missing fields {missing}")
    where = f"{mpath}: "
    variant = _require(m, "variant", str, where)
    try:
        spec = get_variant(variant)
    except ValueError as exc:
        raise ValueError(f"{where}variant: {exc}") from exc
    if m["architecture"] != spec.to_dict():
        raise ValueError(
            f"{where}architecture: expected {spec.to_dict()} for variant {variant!r}, "
            f"got {m['architecture']!r}"
        )
    in_chans = _require(m, "in_chans", int, where)
    num_types = _require(m, "num_types", int, where)
    if in_chans not in (3, 6) or num_types < 2:
        raise ValueError(
            f"{where}expected in_chans 3 or 6 and num_types >= 2, got {in_chans} and {num_types}"
        )
    names, colors = _check_classes(m["class_names"], m["class_colors"], num_types, where)
    mpp = _check_mpp(m["mpp"], where)
    for key in ("hvx_version", "created"):
        _require(m, key, str, where)
    for key in ("provenance", "metrics", "preprocess", "postprocess"):
        _require(m, key, dict, where)
    check_values(m, where)
    pre_cls, post_cls = _config_classes()
    pre = _config_from_dict(pre_cls, m["preprocess"], f"{where}preprocess")
    post = _config_from_dict(post_cls, m["postprocess"], f"{where}postprocess")
    if pre.in_chans != in_chans:
        raise ValueError(
            f"{where}preprocess gives {pre.in_chans} channels, expected in_chans={in_chans}"
        )
    ref = reference_state(variant, in_chans, num_types)  # cached: no timm import (issue 24)
    dtype, kept32 = _check_weights(path, m["weights"], ref)
    return ModelBundle(
        path=path,
        variant=variant,
        in_chans=in_chans,
        num_types=num_types,
        class_names=names,
        class_colors=colors,
        mpp=mpp,
        preprocess=pre,
        postprocess=post,
        provenance=m["provenance"],
        metrics=m["metrics"],
        weights_dtype=dtype,
        float32_tensors=kept32,
    )


def import_hovernet(checkpoint, out, **kwargs) -> Path:
    """Converts a published HoVer-Net checkpoint into a bundle.

    See :func:`hvx.model.hovernet_checkpoint.import_hovernet` for the arguments
    (``mode``, ``types``, ``class_colors``, ``mpp``, ``licence``, ``citation``, ...).
    """
    from hvx.model.hovernet_checkpoint import import_hovernet as _import

    return _import(checkpoint, out, **kwargs)
