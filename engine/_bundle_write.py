"""Writing a model bundle: validate the inputs, cast the weights, write atomically.

:func:`save_bundle` is public as :func:`hvx.bundle.save_bundle`. The bundle is
written into a temporary sibling folder, flushed, and renamed into place.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hvx._bundle_manifest import (
    BUNDLE_FORMAT,
    MANIFEST_FILE,
    SCHEMA_VERSION,
    WEIGHTS_FILE,
    check_classes,
    check_mpp,
    json_dict,
)
from hvx._bundle_weights import dtype_name, fsync, storage_state
from hvx._version import __version__
from hvx.io.digest import file_sha256
from hvx.model import HoVerNet, OfficialHoVerNet

__all__ = ["save_bundle"]


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
    names, colors = check_classes(class_names, class_colors, model.num_types, "")
    mpp = check_mpp(mpp, "")
    storage = dtype_name(weights_dtype)
    _check_configs(preprocess, postprocess, model.in_chans)
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
        "weights": {"file": WEIGHTS_FILE, "dtype": storage},  # completed once written
        "provenance": json_dict(provenance, "provenance"),
        "metrics": json_dict(metrics, "metrics"),
    }
    state, kept32 = storage_state(model, weights_dtype)
    _check_destination(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _write_files(tmp, state, kept32, model.variant, manifest)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _check_configs(preprocess: Any, postprocess: Any, in_chans: int) -> None:
    """Both configs serialise, and the preprocessing feeds the model's channel count."""
    for obj, label in ((preprocess, "preprocess"), (postprocess, "postprocess")):
        if not callable(getattr(obj, "to_dict", None)):
            raise TypeError(f"{label}: expected a config with to_dict(), got {type(obj).__name__}")
    pre_in = getattr(preprocess, "in_chans", None)
    if pre_in != in_chans:
        raise ValueError(
            f"preprocess: expected a config producing {in_chans} channels for the "
            f"model, got in_chans={pre_in}"
        )


def _check_destination(out_dir: Path) -> None:
    """Refuses to replace anything but a bundle or an empty folder."""
    if out_dir.exists() and not (
        out_dir.is_dir() and ((out_dir / MANIFEST_FILE).is_file() or not any(out_dir.iterdir()))
    ):
        raise ValueError(f"refusing to overwrite {out_dir}: it exists and is not an hvx bundle")


def _write_files(
    folder: Path, state: dict[str, torch.Tensor], kept32: list[str], variant: str, manifest: dict
) -> None:
    """Writes and flushes the weights, completes ``manifest["weights"]``, writes model.json."""
    from safetensors.torch import save_file

    wpath = folder / WEIGHTS_FILE
    save_file(state, str(wpath), metadata={"format": "pt", "hvx_variant": variant})
    fsync(wpath)
    manifest["weights"].update(
        bytes=wpath.stat().st_size,
        sha256=file_sha256(wpath),
        tensors=len(state),
        **({"float32_tensors": sorted(kept32)} if kept32 else {}),
    )
    mpath = folder / MANIFEST_FILE
    mpath.write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
    fsync(mpath)
    # mkdtemp makes the folder owner-only and safetensors its file likewise; a
    # bundle is meant to be shared (lab servers, the package), so use the
    # usual modes.
    os.chmod(folder, 0o755)
    os.chmod(wpath, 0o644)
    os.chmod(mpath, 0o644)


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Renames ``tmp`` to ``out_dir``, replacing an existing bundle there."""
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "b")
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
