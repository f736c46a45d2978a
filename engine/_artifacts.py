"""Derived artefacts of a model bundle: its ONNX export and TensorRT plans, cached.

The cache lives in ``$HVX_CACHE_DIR`` (default ``~/.cache/hvx``): ``onnx/`` holds
exports named by :func:`hvx.backends.export.export_cache_key` (the weights'
SHA-256, architecture, opset, export settings and the exporter's format version,
not the hvx version nor the bundle's creation time, so an export survives
upgrades and re-saves of the same bundle); ``plans/`` holds TensorRT plans under
their content key (:func:`hvx.backends.plan.plan_cache_key`) and the timing
caches. Bundles are never written to (they may be read-only).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from hvx.backends.export import export_cache_key, export_onnx
from hvx.backends.plan import build_tensorrt_plan, window_plan_settings

__all__ = ["cache_root", "model_meta", "onnx_for_bundle", "plan_for_bundle"]

log = logging.getLogger(__name__)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$HVX_CACHE_DIR``, else ``~/.cache/hvx``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("HVX_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "hvx"


def model_meta(bundle, size_multiple: int) -> dict:
    """The facts an Engine needs besides the network (recorded in plan sidecars).

    Args:
        bundle: A ``hvx.bundle.ModelBundle``.
        size_multiple: The network's ``size_multiple``.
    """
    return {
        "variant": bundle.variant,
        "in_chans": int(bundle.in_chans),
        "num_types": int(bundle.num_types),
        "class_names": list(bundle.class_names),
        "class_colors": [list(c) for c in bundle.class_colors],
        "mpp": float(bundle.mpp),
        "size_multiple": int(size_multiple),
        "preprocess": bundle.preprocess.to_dict(),
        "postprocess": bundle.postprocess.to_dict(),
        "bundle": str(Path(bundle.path).resolve()),
        "valid_window": valid_window(bundle),
    }


def valid_window(bundle) -> list[int] | None:
    """``[window, output]`` of a valid-padding network (official HoVer-Net), else None."""
    from hvx.model import get_variant

    spec = get_variant(bundle.variant)
    return None if spec.window is None else [int(spec.window), int(spec.output)]


def _export_settings(bundle) -> tuple[int, bool]:
    """``(example_size, fixed_size)`` of the bundle's export, from its variant alone."""
    from hvx.model import get_variant

    spec = get_variant(bundle.variant)
    if spec.window is not None:  # valid-padding network: one fixed input size
        return int(spec.window), True
    return max(64, 2 * int(spec.size_multiple)), False


def _bundle_digest(bundle) -> str:
    """The export's cache key (:func:`hvx.backends.export.export_cache_key`)."""
    from hvx.bundle import MANIFEST_FILE

    manifest = json.loads((Path(bundle.path) / MANIFEST_FILE).read_text())
    size, fixed = _export_settings(bundle)
    return export_cache_key(
        weights_sha256=manifest["weights"]["sha256"],
        architecture=manifest["architecture"],
        in_chans=bundle.in_chans,
        num_types=bundle.num_types,
        example_size=size,
        fixed_size=fixed,
    )


def onnx_for_bundle(bundle, cache_dir: str | os.PathLike | None = None, model=None) -> Path:
    """The validated ONNX export of ``bundle``, exported on first use.

    Args:
        bundle: A ``ModelBundle``.
        cache_dir: Cache root (see :func:`cache_root`).
        model: The bundle's ``HoVerNet`` if already built (saves rebuilding it).

    Returns:
        Path of ``<cache>/onnx/<variant>-<digest>.onnx``.
    """
    path = cache_root(cache_dir) / "onnx" / f"{bundle.variant}-{_bundle_digest(bundle)}.onnx"
    if path.is_file():
        return path
    from hvx.model import HoVerNetInference

    model = model if model is not None else bundle.build_model("cpu")
    size, fixed = _export_settings(bundle)
    log.info("exporting %s to ONNX (once per bundle): %s", bundle.path, path)
    return export_onnx(
        HoVerNetInference(model),
        path,
        in_chans=bundle.in_chans,
        example_size=size,
        fixed_size=fixed,
    )


def plan_for_bundle(
    bundle,
    settings,
    cache_dir: str | os.PathLike | None = None,
    *,
    device: str = "cuda",
    force: bool = False,
) -> Path:
    """The TensorRT plan of ``bundle`` for this GPU/version, built when not cached.

    Args:
        bundle: A ``ModelBundle``.
        settings: ``hvx.backends.plan.PlanSettings``.
        cache_dir: Cache root.
        device: CUDA device to build for.
        force: Rebuild even on a cache hit.
    """
    model = bundle.build_model("cpu")
    window = getattr(model, "window", None)
    if window is not None:  # valid-padding network: the spatial axes are fixed
        settings = window_plan_settings(settings, window)
    onnx_path = onnx_for_bundle(bundle, cache_dir, model=model)
    return build_tensorrt_plan(
        onnx_path,
        cache_root(cache_dir) / "plans",
        settings,
        model_meta=model_meta(bundle, model.size_multiple),
        device=device,
        force=force,
    )
