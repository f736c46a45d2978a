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

This module is the public face (``hvx.bundle``); the manifest's fields and value
ranges live in :mod:`hvx._bundle_manifest`, the weights file in
:mod:`hvx._bundle_weights`, writing in :mod:`hvx._bundle_write`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from hvx import _dictconfig
from hvx._bundle_manifest import (
    BUNDLE_FORMAT,
    DEFAULT_COLORS,
    FIELDS,
    MANIFEST_FILE,
    MAX_JSON_DEPTH,
    MAX_MANIFEST_BYTES,
    SCHEMA_VERSION,
    VALUE_RANGES,
    WEIGHTS_FILE,
    check_classes,
    check_mpp,
    check_values,
    read_manifest,
    require,
)
from hvx._bundle_weights import DTYPES, check_weights, read_weights
from hvx._bundle_write import save_bundle
from hvx._version import __version__
from hvx.model import HoVerNet, create_model, get_variant
from hvx.model._signature import reference_state
from hvx.model.hovernet_checkpoint import import_hovernet as _import
from hvx.postprocess import PostprocessConfig
from hvx.preprocess import PreprocessConfig

__all__ = [
    "BUNDLE_FORMAT",
    "DEFAULT_COLORS",
    "MANIFEST_FILE",
    "MAX_JSON_DEPTH",
    "MAX_MANIFEST_BYTES",
    "SCHEMA_VERSION",
    "VALUE_RANGES",
    "WEIGHTS_FILE",
    "ModelBundle",
    "check_values",
    "import_hovernet",
    "load_bundle",
    "save_bundle",
]


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
        if dtype not in DTYPES.values():
            raise ValueError(f"expected dtype float32, float16 or bfloat16, got {dtype}")
        state = read_weights(self.path / WEIGHTS_FILE)
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

    def save_as(
        self,
        out_dir: str | os.PathLike,
        model: HoVerNet,
        *,
        provenance: dict | None = None,
        weights_dtype: torch.dtype = torch.float32,
    ) -> Path:
        """Writes ``model`` as a new bundle with this bundle's metadata.

        For derived models (float16-safe copies, storage-dtype changes, weight
        averages): classes, colours, mpp, pre/post-processing and metrics are this
        bundle's; ``provenance`` entries are added to (and override) this bundle's.

        Args:
            out_dir: Bundle folder to create (as :func:`save_bundle`).
            model: A network of this bundle's variant.
            provenance: Entries to record on top of this bundle's provenance.
            weights_dtype: Storage dtype of the weights.

        Returns:
            ``out_dir`` as a Path.
        """
        return save_bundle(
            out_dir,
            model,
            class_names=self.class_names,
            class_colors=self.class_colors,
            mpp=self.mpp,
            preprocess=self.preprocess,
            postprocess=self.postprocess,
            provenance={**self.provenance, **(provenance or {})},
            metrics=self.metrics,
            weights_dtype=weights_dtype,
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
    m = read_manifest(mpath)
    _check_header(m, mpath)
    where = f"{mpath}: "
    variant, in_chans, num_types = _check_network(m, where)
    names, colors = check_classes(m["class_names"], m["class_colors"], num_types, where)
    mpp = check_mpp(m["mpp"], where)
    for key in ("hvx_version", "created"):
        require(m, key, str, where)
    for key in ("provenance", "metrics", "preprocess", "postprocess"):
        require(m, key, dict, where)
    check_values(m, where)
    pre, post = _read_configs(m, str(mpath), in_chans)
    ref = reference_state(variant, in_chans, num_types)  # cached: no timm import (issue 24)
    dtype, kept32 = check_weights(path, m["weights"], ref)
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


def _check_header(m: dict, mpath: Path) -> None:
    """The format name, the schema version, and exactly the known top-level fields."""
    if m.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{mpath}: expected format {BUNDLE_FORMAT!r}, got {m.get('format')!r}")
    if m.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{mpath}: unsupported schema_version {m.get('schema_version')!r}; this hvx "
            f"({__version__}) reads schema_version {SCHEMA_VERSION}"
        )
    unknown, missing = sorted(set(m) - FIELDS), sorted(FIELDS - set(m))
    if unknown or missing:
        raise ValueError(f"{mpath}: unknown fields {unknown}, missing fields {missing}")


def _check_network(m: dict, where: str) -> tuple[str, int, int]:
    """``(variant, in_chans, num_types)``, the architecture matching the variant."""
    variant = require(m, "variant", str, where)
    try:
        spec = get_variant(variant)
    except ValueError as exc:
        raise ValueError(f"{where}variant: {exc}") from exc
    if m["architecture"] != spec.to_dict():
        raise ValueError(
            f"{where}architecture: expected {spec.to_dict()} for variant {variant!r}, "
            f"got {m['architecture']!r}"
        )
    in_chans = require(m, "in_chans", int, where)
    num_types = require(m, "num_types", int, where)
    if in_chans not in (3, 6) or num_types < 2:
        raise ValueError(
            f"{where}expected in_chans 3 or 6 and num_types >= 2, got {in_chans} and {num_types}"
        )
    return variant, in_chans, num_types


def _read_configs(m: dict, source: str, in_chans: int) -> tuple[Any, Any]:
    """(PreprocessConfig, PostprocessConfig) by the rule of :mod:`hvx._dictconfig`.

    Every key is required: a missing one would silently take today's default,
    which may differ from what the model was trained with.
    """
    pre = _dictconfig.from_dict(
        PreprocessConfig, m["preprocess"], source=source, prefix="preprocess."
    )
    post = _dictconfig.from_dict(
        PostprocessConfig, m["postprocess"], source=source, prefix="postprocess."
    )
    if pre.in_chans != in_chans:
        raise ValueError(
            f"{source}: preprocess gives {pre.in_chans} channels, expected in_chans={in_chans}"
        )
    return pre, post


def import_hovernet(checkpoint, out, **kwargs) -> Path:
    """Converts a published HoVer-Net checkpoint into a bundle.

    See :func:`hvx.model.hovernet_checkpoint.import_hovernet` for the arguments
    (``mode``, ``types``, ``class_colors``, ``mpp``, ``licence``, ``citation``, ...).
    """
    return _import(checkpoint, out, **kwargs)
