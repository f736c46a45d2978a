"""Nucleus views: one tile's view of a nucleus in image coordinates, and pixel operations.

The :class:`hvx.tiling.stitch.Stitcher` decides between the views of several
tiles; here they are made from a tile's table (:func:`tile_views`), compared
(:func:`shared_pixels`), merged from cut pieces (:func:`merge_views`), grown
(:func:`grown`) and turned into the output table (:func:`nuclei_from_views`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from hvx.results import Nuclei
from hvx.tiling.plan import Tile, TilePlan

if TYPE_CHECKING:
    from hvx.tiling.stitch import StitchStats

__all__ = ["View", "grown", "merge_views", "nuclei_from_views", "shared_pixels", "tile_views"]


@dataclasses.dataclass
class View:
    """One tile's view of a nucleus, in image coordinates (masks: pixels inside ``bbox``)."""

    tile: int
    type: int
    prob: float
    cy: float
    cx: float
    bbox: tuple[int, int, int, int]
    area: int
    contour: np.ndarray
    mask: np.ndarray
    cut: bool
    gid: int = 0
    piece: bool = False  # a cut view, or a nucleus reassembled from cut views
    decider: int = -1  # for cut views: the last tile that can see this nucleus


def nuclei_from_views(items: Sequence[View]) -> Nuclei:
    """The table of emitted views, in their order (masks kept)."""
    return Nuclei(
        id=np.array([it.gid for it in items], dtype=np.int32),
        type=np.array([it.type for it in items], dtype=np.int32),
        type_prob=np.array([it.prob for it in items], dtype=np.float32),
        centroid=np.array([(it.cy, it.cx) for it in items], dtype=np.float64).reshape(-1, 2),
        bbox=np.array([it.bbox for it in items], dtype=np.int32).reshape(-1, 4),
        area=np.array([it.area for it in items], dtype=np.int64),
        contours=[it.contour for it in items],
        masks=[it.mask for it in items],
        cut=np.array([it.cut for it in items], dtype=bool),
        tile=np.array([it.tile for it in items], dtype=np.int32),
    )


def tile_views(
    plan: TilePlan, tile: Tile, inst: np.ndarray, table, stats: StitchStats
) -> Iterator[View]:
    """Yields one tile's nuclei as image-coordinate views (clipped to the image).

    Args:
        plan: The tile plan.
        tile: The tile.
        inst: ``ndarray[T, T] int32`` its instance map.
        table: Its :class:`hvx.results.NucleusTable` (tile coordinates).
        stats: Counts ``seen`` and ``outside`` (views wholly in the padding) are added to.
    """
    t, H, W = plan.tile, plan.height, plan.width
    vh, vw = min(t, H - tile.y0), min(t, W - tile.x0)  # valid part (padding beyond)
    top, left = tile.y0 > 0, tile.x0 > 0
    bottom, right = tile.y0 + t < H, tile.x0 + t < W
    ids = np.asarray(table.id)
    stats.seen += len(ids)
    for k in range(len(ids)):
        rmin, cmin, rmax, cmax = (int(v) for v in table.bbox[k])
        cy, cx = (float(v) for v in table.centroid[k])
        contour = np.asarray(table.contours[k], dtype=np.int32).reshape(-1, 2)
        mask = inst[rmin:rmax, cmin:cmax] == ids[k]
        area = int(table.area[k])
        if rmax > vh or cmax > vw:  # reaches into the padding of a small image
            mask = mask[: max(vh - rmin, 0), : max(vw - cmin, 0)]
            area = int(mask.sum())
            if area == 0:
                stats.outside += 1
                continue
            rr, cc = np.nonzero(mask)
            cy, cx = float(rr.mean() + rmin), float(cc.mean() + cmin)
            rmax, cmax = rmin + int(rr.max()) + 1, cmin + int(cc.max()) + 1
            mask = mask[: rmax - rmin, : cmax - cmin]
            contour = np.minimum(contour, [vw - 1, vh - 1]).astype(np.int32)
        cut = (
            (top and rmin == 0)
            or (left and cmin == 0)
            or (bottom and rmax == t)
            or (right and cmax == t)
        )
        yield View(
            tile=tile.index,
            type=int(table.type[k]),
            prob=float(table.type_prob[k]),
            cy=cy + tile.y0,
            cx=cx + tile.x0,
            bbox=(rmin + tile.y0, cmin + tile.x0, rmax + tile.y0, cmax + tile.x0),
            area=area,
            contour=contour + np.array([tile.x0, tile.y0], dtype=np.int32),
            mask=np.ascontiguousarray(mask),
            cut=bool(cut),
        )


def shared_pixels(a: View, b: View) -> int:
    """Number of pixels two views share."""
    y0, x0 = max(a.bbox[0], b.bbox[0]), max(a.bbox[1], b.bbox[1])
    y1, x1 = min(a.bbox[2], b.bbox[2]), min(a.bbox[3], b.bbox[3])
    if y0 >= y1 or x0 >= x1:
        return 0
    ma = a.mask[y0 - a.bbox[0] : y1 - a.bbox[0], x0 - a.bbox[1] : x1 - a.bbox[1]]
    mb = b.mask[y0 - b.bbox[0] : y1 - b.bbox[0], x0 - b.bbox[1] : x1 - b.bbox[1]]
    return int(np.count_nonzero(ma & mb))


def merge_views(group: list[View]) -> View:
    """One nucleus from the cut views of several tiles (a single view is returned as is)."""
    if len(group) == 1:
        return group[0]
    import cv2

    r0 = min(it.bbox[0] for it in group)
    c0 = min(it.bbox[1] for it in group)
    r1 = max(it.bbox[2] for it in group)
    c1 = max(it.bbox[3] for it in group)
    mask = np.zeros((r1 - r0, c1 - c0), bool)
    for it in group:
        mask[it.bbox[0] - r0 : it.bbox[2] - r0, it.bbox[1] - c0 : it.bbox[3] - c0] |= it.mask
    rr, cc = np.nonzero(mask)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=len).reshape(-1, 2).astype(np.int32) + np.array(
        [c0, r0], dtype=np.int32
    )
    big = max(group, key=lambda it: it.area)
    return View(
        tile=big.tile,
        type=big.type,
        prob=big.prob,
        cy=float(rr.mean() + r0),
        cx=float(cc.mean() + c0),
        bbox=(r0, c0, r1, c1),
        area=len(rr),
        contour=contour,
        mask=mask,
        cut=False,
        piece=True,
    )


def grown(item: View, px: int) -> View:
    """A copy of ``item`` whose mask is dilated by ``px`` pixels (bbox grown to match)."""
    import cv2

    r0, c0, r1, c1 = item.bbox
    padded = np.pad(item.mask, px).astype(np.uint8)
    mask = cv2.dilate(padded, _disk(px)).astype(bool)
    return dataclasses.replace(item, bbox=(r0 - px, c0 - px, r1 + px, c1 + px), mask=mask)


@functools.cache
def _disk(px: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
