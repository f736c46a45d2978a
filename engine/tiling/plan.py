"""Tile planning: overlapping tiles over an image of any size, their centre regions.

Along each axis of length ``L`` tiles of size ``t`` start every ``t - overlap``
pixels; the last tile is moved back so that it ends exactly at ``L`` (it then
overlaps its neighbour by more than ``overlap``). An axis shorter than the tile
gets one tile at 0 and the image is padded up to the tile size when read.

Every tile has a **centre region** (its *core*): the tile minus half of each
overlap with a neighbour, on interior sides only. The cores partition the
image: the boundary between two neighbouring tiles sits in the middle of their
overlap, at ``(end_of_previous + start_of_next) // 2``. A nucleus belongs to the
tile whose core holds its centroid (see :mod:`hvx.tiling.stitch`), so a nucleus
whose pixels all lie within ``overlap // 2`` of its centroid is always seen
whole by its owner: ``overlap`` must exceed the largest nucleus diameter.

Tiles are numbered in raster order (row by row, left to right); a *region* is a
band of ``rows_per_region`` tile rows, the unit of resumption.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator

import numpy as np

__all__ = ["Tile", "TilePlan", "axis_cores", "axis_starts", "plan_tiles"]


def axis_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of the tiles along one axis.

    Args:
        length: Axis length in pixels, >= 1.
        tile: Tile size, >= 1.
        overlap: Overlap of neighbouring tiles, 0 <= overlap < tile.
        align: Every start is a multiple of this (``tile - overlap`` must be one).

    Returns:
        Ascending starts, ``[0]`` when ``length <= tile``. Otherwise the last is
        ``length - tile`` rounded up to a multiple of ``align`` (with ``align=1``
        the last tile ends at the edge; else it may pass it by < ``align`` pixels,
        which the reader pads).
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    last = -(-(length - tile) // align) * align
    n = math.ceil((length - overlap) / stride)
    starts = [min(i * stride, last) for i in range(n)]
    return sorted(set(starts))


def axis_cores(length: int, tile: int, starts: list[int]) -> list[int]:
    """Core boundaries along one axis: tile ``i`` owns ``[b[i], b[i + 1])``.

    Returns:
        ``len(starts) + 1`` integers from 0 to ``length``; an interior boundary is
        the middle of the overlap of its two tiles.
    """
    bounds = [0]
    for prev, nxt in itertools.pairwise(starts):
        bounds.append((min(prev + tile, length) + nxt) // 2)
    bounds.append(length)
    return bounds


@dataclasses.dataclass(frozen=True)
class Tile:
    """One tile of a plan.

    Attributes:
        index: Raster-order index in the plan.
        row: Tile row.
        col: Tile column.
        y0: Top of the tile in image pixels (the tile spans ``y0 .. y0 + size``,
            possibly past the image edge for images smaller than a tile).
        x0: Left of the tile.
        core: ``(ymin, xmin, ymax, xmax)`` of the centre region, max exclusive.
    """

    index: int
    row: int
    col: int
    y0: int
    x0: int
    core: tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """Overlapping tiles covering an ``(height, width)`` image.

    Attributes:
        height: Image height in pixels.
        width: Image width in pixels.
        tile: Tile size (square tiles).
        overlap: Nominal overlap of neighbouring tiles.
        ys: Tile row starts.
        xs: Tile column starts.
        y_bounds: Core boundaries along y (``len(ys) + 1``).
        x_bounds: Core boundaries along x.
        rows_per_region: Tile rows per resumable region.
        align: Tile starts are multiples of this (see :func:`plan_tiles`).
    """

    height: int
    width: int
    tile: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    y_bounds: tuple[int, ...]
    x_bounds: tuple[int, ...]
    rows_per_region: int = 1
    align: int = 1

    @property
    def n_rows(self) -> int:
        """Number of tile rows."""
        return len(self.ys)

    @property
    def n_cols(self) -> int:
        """Number of tile columns."""
        return len(self.xs)

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    @property
    def n_regions(self) -> int:
        """Number of resumable regions (bands of ``rows_per_region`` tile rows)."""
        return math.ceil(self.n_rows / self.rows_per_region)

    def tile_at(self, index: int) -> Tile:
        """The tile of raster index ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"expected a tile index in [0, {len(self)}), got {index}")
        r, c = divmod(index, self.n_cols)
        core = (self.y_bounds[r], self.x_bounds[c], self.y_bounds[r + 1], self.x_bounds[c + 1])
        return Tile(index, r, c, self.ys[r], self.xs[c], core)

    def __iter__(self) -> Iterator[Tile]:
        return (self.tile_at(i) for i in range(len(self)))

    def region_of_row(self, row: int) -> int:
        """Region holding tile row ``row``."""
        return row // self.rows_per_region

    def owner(self, y: float, x: float) -> int:
        """Raster index of the tile whose core holds the point ``(y, x)``.

        Points outside the image are clamped to the nearest core (callers drop
        them first: nuclei must have their centroid inside the image).
        """
        r = int(np.searchsorted(self.y_bounds, y, side="right")) - 1
        c = int(np.searchsorted(self.x_bounds, x, side="right")) - 1
        r = min(max(r, 0), self.n_rows - 1)
        c = min(max(c, 0), self.n_cols - 1)
        return r * self.n_cols + c

    def tiles_touching(self, rmin: int, cmin: int, rmax: int, cmax: int) -> list[int]:
        """Raster indices of the tiles whose area intersects a box (max exclusive)."""
        t = self.tile
        rows = [r for r, y in enumerate(self.ys) if y < rmax and y + t > rmin]
        cols = [c for c, x in enumerate(self.xs) if x < cmax and x + t > cmin]
        return [r * self.n_cols + c for r in rows for c in cols]

    def to_dict(self) -> dict:
        """JSON-ready description (what the run hash covers)."""
        return {
            "height": self.height,
            "width": self.width,
            "tile": self.tile,
            "overlap": self.overlap,
            "rows_per_region": self.rows_per_region,
            "align": self.align,
        }


def plan_tiles(
    height: int,
    width: int,
    tile: int = 512,
    overlap: int = 64,
    *,
    rows_per_region: int = 1,
    align: int = 1,
) -> TilePlan:
    """Plans overlapping square tiles over an image.

    Args:
        height: Image height in pixels, >= 1.
        width: Image width in pixels, >= 1.
        tile: Tile size in pixels, >= 16.
        overlap: Overlap of neighbouring tiles in pixels, even, ``0 <= overlap <=
            tile // 2``; it must exceed the largest nucleus diameter (in pixels at
            the working resolution) for nuclei on seams to be kept whole.
        rows_per_region: Tile rows per resumable region, >= 1.
        align: Tile starts are multiples of this, >= 1; ``tile - overlap`` must be
            a multiple of it. Pass the model's CLAHE tile size
            (``PreprocessConfig.tile_size``): every tile then sees the same CLAHE
            tiles as the whole image, so tiled and one-pass inputs agree.

    Returns:
        The :class:`TilePlan`.

    Raises:
        ValueError: For sizes out of range (the message names expected and got).
    """
    for name, v in (("height", height), ("width", width), ("tile", tile)):
        if not isinstance(v, int | np.integer) or isinstance(v, bool):
            raise TypeError(f"expected an int {name}, got {type(v).__name__}")
    if height < 1 or width < 1:
        raise ValueError(f"expected an image of at least 1 x 1 pixels, got {height} x {width}")
    if tile < 16:
        raise ValueError(f"expected tile >= 16, got {tile}")
    if not 0 <= overlap <= tile // 2 or overlap % 2:
        raise ValueError(
            f"expected an even overlap in [0, {tile // 2}] for tile {tile}, got {overlap}"
        )
    if rows_per_region < 1:
        raise ValueError(f"expected rows_per_region >= 1, got {rows_per_region}")
    if align < 1 or (tile - overlap) % align:
        raise ValueError(
            f"expected align >= 1 dividing tile - overlap = {tile - overlap}, got {align}"
        )
    ys = axis_starts(int(height), int(tile), int(overlap), int(align))
    xs = axis_starts(int(width), int(tile), int(overlap), int(align))
    return TilePlan(
        height=int(height),
        width=int(width),
        tile=int(tile),
        overlap=int(overlap),
        ys=tuple(ys),
        xs=tuple(xs),
        y_bounds=tuple(axis_cores(int(height), int(tile), ys)),
        x_bounds=tuple(axis_cores(int(width), int(tile), xs)),
        rows_per_region=int(rows_per_region),
        align=int(align),
    )
