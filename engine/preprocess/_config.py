"""PreprocessConfig: the network-input recipe stored in every model bundle."""

from __future__ import annotations

import dataclasses
import math
from numbers import Integral, Real

from hvx import _dictconfig

_MODES = ("6ch", "rgb")


def _check_stats(name: str, values, n: int) -> tuple[float, ...] | None:
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"expected {name} as a sequence of {n} floats or None, got {values!r}")
    if len(values) != n:
        raise ValueError(f"expected {name} of length {n} (one per output channel), got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v):
            raise ValueError(f"expected finite floats in {name}, got {values!r}")
        out.append(float(v))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """How uint8 RGB tiles become the network input (SPEC §7a).

    Attributes:
        clip_limit: OpenCV CLAHE ``clipLimit``, > 0 (default 2.0, OpenCV's).
        tile_grid: OpenCV ``tileGridSize`` as (tiles across = width, tiles down =
            height), each >= 1 (default (8, 8)). Unused when ``tile_size`` is set.
        tile_size: CLAHE tile side in pixels, or None (default) for OpenCV's
            fixed ``tile_grid``, whose tiles grow with the image. When set, an
            H x W image gets ``(ceil(W / tile_size), ceil(H / tile_size))`` tiles of
            exactly ``tile_size`` pixels, as OpenCV does on the image padded
            bottom/right (BORDER_REFLECT_101) to multiples of ``tile_size``. Then a
            crop whose origin is a multiple of ``tile_size`` gets the same LUTs and
            the same interpolation weights (exact for powers of two) as the whole
            image, except within ``tile_size / 2`` of its own border: the network
            sees the same input whether a slide is tiled or not, and training crops
            of any size match inference. A 256 x 256 tile with ``tile_size=32``
            equals ``tile_grid=(8, 8)`` exactly.
        mode: "6ch": CLAHE on R, G, B, then channels B, G, R, S (HSV), Cr, Cb
            (YCrCb) of the enhanced image; "rgb": R, G, B / 255, no CLAHE (the
            HoVer-Net baseline and ablations). clip_limit/tile_grid are unused there.
        mean: Per output channel, subtracted from ``plane / 255``; None = 0.
        std: Per output channel, divides ``plane / 255 - mean``; None = 1; each > 0.

    Raises:
        ValueError, TypeError: On an out-of-range or mistyped field, naming it.
    """

    clip_limit: float = 2.0
    tile_grid: tuple[int, int] = (8, 8)
    tile_size: int | None = None
    mode: str = "6ch"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        c = self.clip_limit
        if isinstance(c, bool) or not isinstance(c, Real):
            raise TypeError(f"expected clip_limit as a float > 0, got {c!r}")
        if not (math.isfinite(c) and c > 0):
            raise ValueError(f"expected clip_limit > 0 (finite), got {c!r}")
        object.__setattr__(self, "clip_limit", float(c))
        g = self.tile_grid
        if (
            isinstance(g, (str, bytes))
            or not hasattr(g, "__len__")
            or len(g) != 2
            or any(isinstance(v, bool) or not isinstance(v, Integral) for v in g)
        ):
            raise TypeError(f"expected tile_grid as two ints (across, down), got {g!r}")
        if min(g) < 1:
            raise ValueError(f"expected tile_grid entries >= 1, got {tuple(g)!r}")
        object.__setattr__(self, "tile_grid", (int(g[0]), int(g[1])))
        t = self.tile_size
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, Integral):
                raise TypeError(f"expected tile_size as an int >= 1 or None, got {t!r}")
            if t < 1:
                raise ValueError(f"expected tile_size >= 1 or None, got {t!r}")
            object.__setattr__(self, "tile_size", int(t))
        if self.mode not in _MODES:
            raise ValueError(f"expected mode in {_MODES}, got {self.mode!r}")
        object.__setattr__(self, "mean", _check_stats("mean", self.mean, self.in_chans))
        std = _check_stats("std", self.std, self.in_chans)
        if std is not None and min(std) <= 0:
            raise ValueError(f"expected std > 0 for every channel, got {std!r}")
        object.__setattr__(self, "std", std)

    @property
    def in_chans(self) -> int:
        """Channels of the network input: 6 ("6ch") or 3 ("rgb")."""
        return 6 if self.mode == "6ch" else 3

    @property
    def normalised(self) -> bool:
        """True when mean or std is set."""
        return self.mean is not None or self.std is not None

    def to_dict(self) -> dict:
        """Returns a JSON-ready dict (tuples as lists); inverse of :meth:`from_dict`."""
        return _dictconfig.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "PreprocessConfig") -> PreprocessConfig:
        """Builds a config from :meth:`to_dict` output (the rule of :mod:`hvx._dictconfig`).

        Every key is required (no field has a documented default here: a bundle
        records them all, and a missing ``mode`` must not silently become "6ch").

        Raises:
            ValueError: On an unknown or missing key, a mistyped or invalid value.
        """
        return _dictconfig.from_dict(cls, d, source=source)
