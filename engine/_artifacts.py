"""Derived artefacts of a model bundle: its ONNX export and TensorRT plans, cached.

The cache lives in ``$HVX_CACHE_DIR`` (default ``~/.cache/hvx``): ``onnx/`` holds
exports named by a hash of the bundle's ``model.json`` (which records the
weights' SHA-256), the torch version and the opset; ``plans/`` holds TensorRT
plans under their content key (:func:`hvx.backends.export.plan_cache_key`)
and the timing caches. Bundles are never written to (they may be read-only).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

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


def _bundle_digest(bundle) -> str:
    import torch

    from hvx.backends.export import ONNX_OPSET

    h = hashlib.sha256((Path(bundle.path) / "model.json").read_bytes())
    h.update(f"torch={torch.__version__};opset={ONNX_OPSET}".encode())
    return h.hexdigest()[:24]


def onnx_for_bundle(bundle, cache_dir: str | os.PathLike | None = None, model=None) -> Path:
    """The validated ONNX export of ``bundle``, exported on first use.

    Args:
        bundle: A ``ModelBundle``.
        cache_dir: Cache root (see :func:`cache_root`).
        model: The bundle's ``HoVerNet`` if already built (saves rebuilding it).

    Returns:
        Path of ``<cache>/onnx/<variant>-<digest>.onnx``.
    """
    from hvx.backends.export import export_onnx

    path = cache_root(cache_dir) / "onnx" / f"{bundle.variant}-{_bundle_digest(bundle)}.onnx"
    if path.is_file():
        return path
    from hvx.model import HoVerNetInference

    model = model if model is not None else bundle.build_model("cpu")
    size = max(64, 2 * int(model.size_multiple))
    window = getattr(model, "window", None)  # valid-padding network: one fixed input size
    log.info("exporting %s to ONNX (once per bundle): %s", bundle.path, path)
    return export_onnx(
        HoVerNetInference(model),
        path,
        in_chans=bundle.in_chans,
        example_size=window or size,
        fixed_size=window is not None,
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
        settings: ``hvx.backends.export.PlanSettings``.
        cache_dir: Cache root.
        device: CUDA device to build for.
        force: Rebuild even on a cache hit.
    """
    from hvx.backends.export import build_tensorrt_plan, window_plan_settings

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
