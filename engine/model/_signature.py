"""The state-dict signature of a variant (names, shapes, dtypes), cached without timm.

:func:`hvx.bundle.load_bundle` checks a bundle's weights against the architecture
(every tensor name, shape and dtype) before anything is built. Building the model,
even on the meta device, imports timm for its encoder, and importing timm costs
seconds (it pulls in torchvision and ``torch._dynamo``), although reading a bundle
and running its cached ONNX export never need timm (issue 24 item 5).

:func:`reference_state` therefore caches the signature in
``<cache>/arch/<variant>-<in_chans>-<num_types>-<key>.json`` (``<cache>`` as for
the ONNX exports, :func:`hvx._artifacts.cache_root`). The key hashes everything the
signature depends on: the arguments, the torch and timm versions, and the source of
``hvx.model``; a change to any of them misses the cache. A missing, unreadable or
malformed entry is rebuilt from the model; an entry that cannot be written (a
read-only home) is only logged. When timm is already imported the model is built
directly (it costs milliseconds then), and the cache is neither read nor written.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import sys
from pathlib import Path

import torch

from hvx._artifacts import cache_root
from hvx.io.atomic import atomic_write
from hvx.model._net import create_model

__all__ = ["reference_state", "signature_path"]

log = logging.getLogger(__name__)

_FORMAT = "hvx-state-signature"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}


def _source_digest() -> str:
    """SHA-256 of the source files of ``hvx.model`` (the architecture's code).

    Raises:
        OSError: The sources cannot be read (e.g. a zipped install).
    """
    h = hashlib.sha256()
    files = sorted(Path(__file__).parent.glob("*.py"))
    if not files:
        raise FileNotFoundError(f"no sources of hvx.model found in {Path(__file__).parent}")
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def signature_path(variant: str, in_chans: int, num_types: int, cache_dir=None) -> Path:
    """Where the signature of ``create_model(variant, in_chans=, num_types=)`` is cached.

    Args:
        variant: Variant name (``hvx.model.get_variant``).
        in_chans: Input channels.
        num_types: Type classes including background.
        cache_dir: Cache root (default :func:`hvx._artifacts.cache_root`).

    Returns:
        ``<cache>/arch/<variant>-<in_chans>-<num_types>-<key>.json``.
    """
    try:
        timm_version = importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        timm_version = "none"
    key = json.dumps(
        [variant, in_chans, num_types, torch.__version__, timm_version, _source_digest()]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return cache_root(cache_dir) / "arch" / f"{variant}-{in_chans}-{num_types}-{digest}.json"


def _built(variant: str, in_chans: int, num_types: int) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return create_model(variant, in_chans=in_chans, num_types=num_types).state_dict()


def _read(path: Path) -> dict[str, torch.Tensor] | None:
    """The cached signature as meta tensors, or None when absent or malformed."""
    try:
        doc = json.loads(path.read_text())
        if doc["format"] != _FORMAT:
            return None
        return {
            name: torch.empty(tuple(shape), dtype=_DTYPES[dtype], device="meta")
            for name, shape, dtype in doc["tensors"]
        }
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        if path.exists():
            log.debug("state signature %s unreadable (%s); rebuilding it", path, exc)
        return None


def _write(path: Path, state: dict[str, torch.Tensor]) -> None:
    names = {v: k for k, v in _DTYPES.items()}
    if any(t.dtype not in names for t in state.values()):
        return  # a dtype the format does not name: build the model each time instead
    doc = {
        "format": _FORMAT,
        "tensors": [[k, list(t.shape), names[t.dtype]] for k, t in state.items()],
    }

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(doc, separators=(",", ":")), durable=False)
    except OSError as exc:
        log.debug("state signature not cached at %s (%s)", path, exc)


def reference_state(variant: str, in_chans: int, num_types: int) -> dict[str, torch.Tensor]:
    """Meta tensors named, shaped and typed as ``create_model(...).state_dict()``.

    Args:
        variant: Variant name (``hvx.model.get_variant``).
        in_chans: Input channels (3 or 6).
        num_types: Type classes including background (>= 2).

    Returns:
        ``{name: Tensor}`` on the meta device, in the state dict's order.

    Raises:
        ValueError: What :func:`hvx.model.create_model` raises for bad arguments.
    """
    if "timm" in sys.modules:
        return _built(variant, in_chans, num_types)
    try:
        path = signature_path(variant, in_chans, num_types)
    except (OSError, RuntimeError) as exc:  # unreadable sources, no home folder
        log.debug("state signatures not cached (%s)", exc)
        return _built(variant, in_chans, num_types)
    state = _read(path)
    if state is None:
        state = _built(variant, in_chans, num_types)
        _write(path, state)
    return state
