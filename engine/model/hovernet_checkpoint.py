"""Published HoVer-Net checkpoints -> hvx bundles (``hvx import-hovernet``).

Reads the official ``.tar`` files (``{"desc": state_dict}`` saved from
``torch.nn.DataParallel``, keys prefixed ``module.``) and TIAToolbox's ``.pth``
(the state dict itself, official names) with ``torch.load(weights_only=True)``:
a pickle that holds code or objects other than tensors and plain containers is
refused, never executed. Every problem becomes one :class:`CheckpointError` line.
"""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch

from hvx.io.digest import file_sha256
from hvx.model.hovernet import MODES, OfficialHoVerNet, official_state_dict, official_variant

__all__ = [
    "HOVERNET_CITATION",
    "CheckpointError",
    "import_hovernet",
    "read_hovernet_checkpoint",
]

HOVERNET_CITATION = (
    "Graham S, Vu QD, Raza SEA, Azam A, Tsang YW, Kwak JT, Rajpoot N. HoVer-Net: "
    "Simultaneous segmentation and classification of nuclei in multi-tissue histology "
    "images. Medical Image Analysis 58 (2019) 101563. doi:10.1016/j.media.2019.101563"
)


class CheckpointError(ValueError):
    """A checkpoint that is not a usable HoVer-Net (the message is one line)."""


def _reason(message: str) -> str:
    """The specific line of a torch.load error (its first lines are generic advice)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or ln.startswith(("Unsupported", "Trying to load")):
            return ln
    return lines[-1] if lines else "unknown error"


def _load(path: Path) -> object:
    """``torch.load(weights_only=True)`` with each failure turned into one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _reason(str(exc))
        if "GLOBAL" in reason or "global" in reason:
            raise CheckpointError(
                f"{path}: refused: the pickle holds code or objects other than tensors "
                f"(torch.load(weights_only=True): {reason})"
            ) from None
        raise CheckpointError(
            f"{path}: unreadable checkpoint (truncated or not a torch file): {reason}"
        ) from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: unreadable checkpoint (truncated or not a torch file): {first}"
        ) from None


def _state_of(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "desc" in obj:  # official .tar
        obj = obj["desc"]
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"{path}: expected a state dict or {{'desc': state_dict}}, got {type(obj).__name__}"
        )
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        keys = sorted(str(k) for k in obj)[:5]
        raise CheckpointError(
            f"{path}: expected a state dict (name -> tensor) or {{'desc': state_dict}}, "
            f"got entries {keys} ({len(bad)} not tensors)"
        )
    return obj


def _detect(state: dict[str, torch.Tensor], path: Path) -> tuple[str | None, int | None]:
    """(mode from the decoder kernel size or None, tp channels or None)."""
    w = state.get("decoder.np.u3.conva.weight")
    mode = None
    if w is not None and w.ndim == 4:
        mode = {5: "original", 3: "fast"}.get(int(w.shape[-1]))
    tp = state.get("decoder.tp.u0.conv.weight")
    return mode, (int(tp.shape[0]) if tp is not None and tp.ndim == 4 else None)


def _check_fit(model: OfficialHoVerNet, state: dict[str, torch.Tensor], path: Path) -> None:
    ref = model.state_dict()
    missing = sorted(set(ref) - set(state))
    unexpected = sorted(set(state) - set(ref))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: not a HoVer-Net {model.mode} state dict: missing {len(missing)} keys "
            f"{missing[:3]}, unexpected {len(unexpected)} {unexpected[:3]}"
        )
    for k, t in ref.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise CheckpointError(
                f"{path}: shape mismatch for {k}: expected {tuple(t.shape)}, "
                f"got {tuple(state[k].shape)}"
            )
        if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all()):
            raise CheckpointError(f"{path}: {k} holds NaN or infinite values")
    if not bool((state["upsample2x.unpool_mat"] == 1).all()):
        raise CheckpointError(f"{path}: upsample2x.unpool_mat is not the official 2x2 ones")


def read_hovernet_checkpoint(
    path: str | os.PathLike, mode: str
) -> tuple[OfficialHoVerNet, dict[str, str]]:
    """Reads a published checkpoint into an :class:`OfficialHoVerNet`.

    Args:
        path: Official ``.tar`` or TIAToolbox ``.pth``.
        mode: "fast" or "original" (checked against the decoder kernel size).

    Returns:
        ``(model in eval mode, facts)`` with facts ``{"sha256", "layout", "file"}``.

    Raises:
        CheckpointError: unreadable, refused, or not a HoVer-Net of ``mode``.
    """
    path = Path(path)
    if mode not in MODES:
        raise CheckpointError(f"expected mode 'fast' or 'original', got {mode!r}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    obj = _load(path)
    layout = "official .tar {'desc': ...}" if isinstance(obj, dict) and "desc" in obj else "pth"
    raw = _state_of(obj, path)
    if any(k.startswith("module.") for k in raw):
        layout += ", module. prefix"
    state = official_state_dict(raw)
    found, tp = _detect(state, path)
    if found is not None and found != mode:
        raise CheckpointError(
            f"{path}: the checkpoint is a HoVer-Net '{found}' model (decoder kernels "
            f"{MODES[found][2]}x{MODES[found][2]}), not '{mode}': use --mode {found}"
        )
    from hvx.model import create_model

    model = create_model(official_variant(mode, tp is not None), in_chans=3, num_types=tp or 2)
    _check_fit(model, state, path)
    model.load_state_dict(state, strict=True)
    return model.eval(), {"sha256": file_sha256(path), "layout": layout, "file": path.name}


def _class_info(
    model: OfficialHoVerNet, types: int | Sequence[str] | None, path: Path
) -> list[str]:
    n = model.num_types - 1
    if not model.typed:
        if types not in (None, 2) and list(types or []) != ["nucleus"]:
            raise CheckpointError(
                f"{path}: the checkpoint has no type branch (np and hv only); got types={types!r}"
            )
        return ["nucleus"]
    if types is None:
        return [f"type_{i}" for i in range(1, n + 1)]
    if isinstance(types, int):
        if types != model.num_types:
            raise CheckpointError(
                f"{path}: --types {types} but the checkpoint's type branch has "
                f"{model.num_types} outputs (background included)"
            )
        return [f"type_{i}" for i in range(1, n + 1)]
    names = [str(t).strip() for t in types]
    if len(names) != n:
        raise CheckpointError(
            f"{path}: expected {n} type names (type ids 1..{n}; 0 is background), got {names}"
        )
    return names


def import_hovernet(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    mode: str,
    types: int | Sequence[str] | None = None,
    class_colors: Sequence[Sequence[int]] | None = None,
    mpp: float = 0.25,
    licence: str = "unknown: check the checkpoint's publisher",
    citation: str = HOVERNET_CITATION,
    source: str | None = None,
    name: str | None = None,
) -> Path:
    """Converts a published HoVer-Net checkpoint into an hvx bundle (atomically).

    The bundle holds the weights (safetensors, float32), architecture and mode,
    ``PreprocessConfig(mode="rgb")`` (RGB / 255, no CLAHE: the official input),
    the official post-processing parameters, type names/colours, mpp, and in
    ``provenance`` the licence, citation, source and the checkpoint's SHA-256.

    Args:
        checkpoint: Official ``.tar`` or TIAToolbox ``.pth``.
        out: Bundle folder to write.
        mode: "fast" (256 -> 164) or "original" (270 -> 80).
        types: Number of types including background (checked), or the names of
            types 1.. (background excluded); None: ``type_1``, ... Models without
            a type branch get the single type "nucleus".
        class_colors: RGB per type name (default: hvx's palette).
        mpp: Microns per pixel of the training data (0.25 = 40x for all published).
        licence: Licence of the weights (recorded; shown by ``hvx info``).
        citation: Paper to cite (recorded).
        source: Where the checkpoint came from (URL), recorded.
        name: Registry name, recorded.

    Returns:
        ``Path(out)``.

    Raises:
        CheckpointError: A checkpoint that cannot be used (one line).
        ValueError: Bad metadata (colours, mpp), or ``out`` is a non-bundle folder.
    """
    from hvx.bundle import save_bundle
    from hvx.postprocess import PostprocessConfig
    from hvx.preprocess import PreprocessConfig

    path = Path(checkpoint)
    if (
        isinstance(mpp, bool)
        or not isinstance(mpp, int | float)
        or not (math.isfinite(mpp) and mpp > 0)
    ):
        raise ValueError(f"expected mpp a positive number of microns per pixel, got {mpp!r}")
    model, facts = read_hovernet_checkpoint(path, mode)
    names = _class_info(model, types, path)
    provenance = {
        "source": source or str(path.resolve()),
        "checkpoint": facts["file"],
        "checkpoint_sha256": facts["sha256"],
        "checkpoint_layout": facts["layout"],
        "licence": licence,
        "citation": citation,
        "imported_by": "hvx import-hovernet",
        **({"registry_name": name} if name else {}),
    }
    return save_bundle(
        out,
        model,
        class_names=names,
        class_colors=class_colors,
        mpp=float(mpp),
        preprocess=PreprocessConfig(mode="rgb"),
        postprocess=PostprocessConfig(),
        provenance=provenance,
    )
