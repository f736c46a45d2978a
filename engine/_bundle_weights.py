"""The ``weights.safetensors`` of a model bundle: storage dtype, hashing, checking.

Writing casts the state dict to the storage dtype (keeping float32 what would
overflow it); reading checks size, SHA-256, header, names, shapes and dtypes
against the architecture before any tensor is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hvx._bundle_manifest import MANIFEST_FILE, WEIGHTS_FILE
from hvx.io.digest import file_sha256

__all__ = [
    "DTYPES",
    "check_weights",
    "dtype_name",
    "fsync",
    "read_weights",
    "storage_state",
]

_WEIGHT_FIELDS = frozenset({"file", "dtype", "bytes", "sha256", "tensors"})
_WEIGHT_OPTIONAL = frozenset({"float32_tensors"})
#: Storage dtype names of model.json -> torch dtypes.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_ST_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def dtype_name(dtype: torch.dtype) -> str:
    """The model.json name of a storage dtype; ValueError for any other dtype."""
    for name, dt in DTYPES.items():
        if dt == dtype:
            return name
    raise ValueError(f"expected weights_dtype float32, float16 or bfloat16, got {dtype}")


def fsync(path: Path) -> None:
    """Flushes a written file to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def storage_state(
    model: torch.nn.Module, weights_dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict as stored: CPU, contiguous, floats cast to ``weights_dtype``.

    A floating tensor finite in float32 that overflows ``weights_dtype`` is kept
    float32 (e.g. a BatchNorm running variance above 65504 in float16).

    Returns:
        ``(state, names of the tensors kept float32)``.
    """
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
    return state, kept32


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file on the CPU; ValueError if unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: unreadable safetensors file ({exc})") from exc


def check_weights(
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
    if info["dtype"] not in DTYPES:
        raise ValueError(f"{where}dtype: expected one of {list(DTYPES)}, got {info['dtype']!r}")
    kept32 = _check_kept32(info, model_state, where)
    wpath = path / WEIGHTS_FILE
    if not wpath.is_file():
        raise ValueError(f"{path}: missing {WEIGHTS_FILE}")
    size = wpath.stat().st_size
    if size != info["bytes"]:
        raise ValueError(
            f"{wpath}: truncated or altered: expected {info['bytes']} bytes, got {size}"
        )
    digest = file_sha256(wpath)
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
