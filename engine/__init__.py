"""hvx: fast, exact ConvNeXt HoVer-Net nuclei segmentation and classification.

Importing hvx is cheap and has no side effects: heavy modules (torch, the
native extension, Triton kernels) load when first used. ``hvx.Engine``,
``hvx.load`` and ``hvx.BatchResult`` resolve on first access::

    engine = hvx.Engine.load("path/to/bundle")
    result = engine.infer(tiles)          # uint8 RGB (N, H, W, 3)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hvx._version import __version__

if TYPE_CHECKING:
    from hvx.engine import Engine, load
    from hvx.results import BatchResult

__all__ = ["BatchResult", "Engine", "__version__", "load"]

_LAZY = {"Engine": "hvx.engine", "load": "hvx.engine", "BatchResult": "hvx.results"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hvx' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
