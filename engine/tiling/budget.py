"""Memory estimates checked before inference allocates anything.

The network and post-processing hold about :data:`NET_BYTES_PER_PIXEL` bytes of
host memory per input pixel at once (measured in issue 23: a 4,096 x 4,096 PNG
through the one-pass CPU path peaked at 9.3 GB, 554 B/px, default model). A run
is refused up front, with the limit and the flag that raises it named, when its
estimate exceeds the limit -- instead of being killed by the kernel minutes later.
"""

from __future__ import annotations

import os

__all__ = [
    "NET_BYTES_PER_PIXEL",
    "MemoryBudgetError",
    "check_one_pass_memory",
    "check_tiled_image_memory",
    "check_tiled_memory",
    "default_limit_gb",
]

#: Host bytes per network input pixel (network activations + post-processing).
NET_BYTES_PER_PIXEL = 600
_GB = 1e9
FLAG = "--max-memory-gb"


class MemoryBudgetError(ValueError):
    """The run's memory estimate exceeds the allowed limit."""


def default_limit_gb() -> float:
    """80 % of the machine's physical memory, in GB (16 GB when unknown)."""
    try:
        return 0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / _GB
    except (ValueError, OSError, AttributeError):
        return 16.0


def _check(what: str, need: float, limit_gb: float | None, hint: str) -> None:
    limit = default_limit_gb() if limit_gb is None else float(limit_gb)
    if need > limit * _GB:
        raise MemoryBudgetError(
            f"expected {what} to fit in {limit:.1f} GB of memory, got an estimate of "
            f"{need / _GB:.1f} GB; {hint}, or raise the limit with {FLAG}"
        )


def check_tiled_memory(
    tile: int,
    batch_size: int,
    queue_tiles: int,
    *,
    queue_batches: int = 2,
    limit_gb: float | None = None,
) -> float:
    """Estimates (bytes) and checks the memory of tiled inference.

    Raises:
        MemoryBudgetError: The estimate exceeds ``limit_gb`` (default: 80 % of RAM).
    """
    px = float(tile) * float(tile)
    need = px * (
        batch_size * NET_BYTES_PER_PIXEL + queue_tiles * 3 + queue_batches * batch_size * 8
    )
    _check(
        f"tiles of {tile} x {tile} px in batches of {batch_size}",
        need,
        limit_gb,
        "use a smaller --tile or --tile-batch/--batch-size",
    )
    return need


def check_one_pass_memory(pixels: int, *, limit_gb: float | None = None) -> float:
    """Estimates (bytes) and checks one network call over ``pixels`` input pixels.

    Raises:
        MemoryBudgetError: The estimate exceeds ``limit_gb``.
    """
    need = float(pixels) * NET_BYTES_PER_PIXEL
    _check(f"one pass over {pixels} pixels", need, limit_gb, "use the tiled path (hvx slide)")
    return need


def check_tiled_image_memory(
    pixels: int, tile: int, batch_size: int, limit_gb: float | None = None
) -> float:
    """Estimates (bytes) and checks tiled inference of one in-memory image.

    The image at the model's resolution (3 B/px), its instance and type maps
    (5 B/px) and their copies at the input resolution (about as much again) are
    held, plus the tiled working set.

    Raises:
        MemoryBudgetError: The estimate exceeds ``limit_gb``.
    """
    need = float(pixels) * 16 + check_tiled_memory(tile, batch_size, 32, limit_gb=limit_gb)
    _check(
        f"an image of {pixels} network pixels",
        need,
        limit_gb,
        "check --mpp (the input's microns per pixel), or use hvx slide",
    )
    return need
