"""Seam resolution: every nucleus of a tiled image is kept exactly once, whole.

Tiles arrive in raster order with their instance map and nuclei table (tile
coordinates). For each nucleus of a tile the stitcher decides, in this order of
priority:

a. **whole** (not touching an interior side of the tile) and its centroid in the
   tile's core -> emitted (this tile owns it);
b. whole versions that an *earlier* tile saw, deferred to this tile because
   their centroid lay in this tile's core -> emitted if this tile kept nothing
   in their place (the owner saw the nucleus cut or predicted it differently);
c. whole, centroid in the core of an earlier or skipped tile -> emitted (that tile
   did not keep it: it saw it cut, or its prediction put the centroid here);
d. whole, centroid in the core of a later tile -> deferred to that tile (b);
e. **cut** (touching an interior side) -> deferred until the last tile that can see
   it whole has been processed; only emitted, flagged ``cut``, if none kept it.

"Emitted" always means "emitted unless it duplicates a nucleus already emitted":
a candidate is a duplicate when it shares at least ``match_fraction`` of the
smaller of the two areas with an emitted nucleus (two tiles' views of one
nucleus; with identical predictions they coincide). So no nucleus is emitted
twice, even where two tiles' networks disagree near a seam, and one seen whole
anywhere is never emitted cut. Global ids are assigned at emission: 1, 2, ...

Memory: emitted nuclei are kept (bbox + mask crop) only while a later tile can
still overlap them -- one tile row plus the seam band below it -- and deferred
nuclei only until their deciding tile; nothing grows with the image size. They
are pruned at each row's last *scheduled* tile, so trailing background tiles
(skipped) do not keep a row's nuclei alive; :meth:`Stitcher.held` counts what
is held and ``stats.held_max`` its maximum.
With identical predictions in every tile (a network that sees the whole nucleus
the same way) and ``overlap`` larger than every nucleus, the result equals a
one-pass segmentation of the whole image up to the order of ids.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from hvx.tiling.plan import Tile, TilePlan

__all__ = ["Nuclei", "StitchStats", "Stitcher"]

_GRID = 64  # spatial-index cell size in pixels
_PIECE_TOLERANCE = 2  # px a whole view is grown by when a cut piece is compared with it


@dataclasses.dataclass
class Nuclei:
    """Nuclei in image coordinates, in emission order (a ``NucleusTable`` look-alike).

    Attributes:
        id: ``ndarray[K] int32`` global ids.
        type: ``ndarray[K] int32`` class ids (0 = background/unclassified).
        type_prob: ``ndarray[K] float32`` class probability.
        centroid: ``ndarray[K, 2] float64`` (y, x) in image pixels.
        bbox: ``ndarray[K, 4] int32`` (rmin, cmin, rmax, cmax), max exclusive.
        area: ``ndarray[K] int64`` pixels.
        contours: ``list[ndarray[K_i, 2] int32]`` outer contour, (x, y) image pixels.
        masks: ``list[ndarray[h_i, w_i] bool]`` pixels inside ``bbox``.
        cut: ``ndarray[K] bool``: True for a nucleus no tile saw whole.
        tile: ``ndarray[K] int32``: raster index of the tile whose view was kept.
    """

    id: np.ndarray
    type: np.ndarray
    type_prob: np.ndarray
    centroid: np.ndarray
    bbox: np.ndarray
    area: np.ndarray
    contours: list[np.ndarray]
    masks: list[np.ndarray]
    cut: np.ndarray
    tile: np.ndarray

    def __len__(self) -> int:
        return len(self.id)

    @classmethod
    def empty(cls) -> Nuclei:
        """No nuclei."""
        return cls._from_items([])

    @classmethod
    def _from_items(cls, items: Sequence[_Item]) -> Nuclei:
        return cls(
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


@dataclasses.dataclass
class StitchStats:
    """What the stitcher decided, summed over tiles.

    Attributes:
        tiles: Tiles added.
        seen: Nuclei in the tiles' tables (each view counted).
        emitted: Nuclei kept.
        duplicates: Views dropped because another view of the nucleus was kept.
        deferred: Views deferred to a later tile.
        outside: Views whose centroid lay outside the image (padding).
        reassembled: Nuclei no tile saw whole, rebuilt from the cut views of
            several tiles (overlap smaller than the nucleus).
        cut_emitted: Nuclei kept cut: seen by no tile whole, nor reassembled.
        held_max: Most nucleus views held in memory at once (bounded by the tile
            rows in flight, not by the image area).
        cut_max_extent: Longest bbox side (px) of a nucleus kept cut (0: none).
    """

    tiles: int = 0
    seen: int = 0
    emitted: int = 0
    duplicates: int = 0
    deferred: int = 0
    outside: int = 0
    reassembled: int = 0
    cut_emitted: int = 0
    held_max: int = 0
    cut_max_extent: int = 0

    def to_dict(self) -> dict:
        """JSON-ready counters."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Item:
    """One view of a nucleus, in image coordinates."""

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


class Stitcher:
    """Resolves nuclei across overlapping tiles, streaming (see the module docstring).

    Args:
        plan: The tile plan.
        scheduled: Raster indices of the tiles that will be added (default: all);
            tiles left out (background) own nothing.
        match_fraction: Two views are one nucleus when they share at least this
            fraction of the smaller area, in (0, 1].
        next_id: First global id to assign.
    """

    def __init__(
        self,
        plan: TilePlan,
        scheduled: Sequence[int] | np.ndarray | None = None,
        *,
        match_fraction: float = 0.5,
        next_id: int = 1,
    ) -> None:
        if not 0.0 < match_fraction <= 1.0:
            raise ValueError(f"expected match_fraction in (0, 1], got {match_fraction}")
        self.plan = plan
        if scheduled is None:
            self._scheduled = np.ones(len(plan), dtype=bool)
        else:
            self._scheduled = np.zeros(len(plan), dtype=bool)
            idx = np.asarray(scheduled, dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= len(plan)):
                raise ValueError(f"expected scheduled tile indices in [0, {len(plan)}), got {idx}")
            self._scheduled[idx] = True
        self.match_fraction = float(match_fraction)
        self.next_id = int(next_id)
        self.last_tile = -1
        self.stats = StitchStats()
        self._active: dict[int, _Item] = {}  # gid -> emitted item still overlappable
        self._index: dict[tuple[int, int], set[int]] = defaultdict(set)
        self._pending: dict[int, list[_Item]] = defaultdict(list)  # deciding tile -> views
        self._cut: list[_Item] = []  # cut views waiting for the other pieces

    # ----------------------------------------------------------------- public
    def add_tile(self, tile_index: int, inst: np.ndarray, table) -> Nuclei:
        """Adds one tile's segmentation; returns the nuclei emitted now.

        Args:
            tile_index: Raster index in the plan; strictly increasing across calls
                and one of the scheduled tiles.
            inst: ``ndarray[T, T] int32`` instance map of the tile (T = plan.tile).
            table: The tile's ``NucleusTable`` (ids of ``inst``; tile coordinates).

        Returns:
            The :class:`Nuclei` emitted by this call, ids assigned.

        Raises:
            ValueError: For an out-of-order or unscheduled tile, or a wrong shape.
        """
        if tile_index <= self.last_tile:
            raise ValueError(
                f"expected tiles in increasing raster order, got {tile_index} after "
                f"{self.last_tile}"
            )
        if not 0 <= tile_index < len(self.plan) or not self._scheduled[tile_index]:
            raise ValueError(f"expected a scheduled tile index, got {tile_index}")
        t = self.plan.tile
        inst = np.asarray(inst)
        if inst.shape != (t, t):
            raise ValueError(f"expected an instance map of shape ({t}, {t}), got {inst.shape}")
        # Tiles skipped since the last call: release what waited on them.
        emitted: list[_Item] = []
        for skipped in range(self.last_tile + 1, tile_index):
            emitted += self._release(skipped)
        tile = self.plan.tile_at(tile_index)
        self.last_tile = tile_index
        self.stats.tiles += 1

        owned, late, cut = [], [], []
        for item in self._views(tile, inst, table):
            owner = self.plan.owner(item.cy, item.cx)
            if item.cut:
                cut.append(item)
            elif owner == tile_index:
                owned.append(item)
            elif owner < tile_index or not self._scheduled[owner]:
                late.append(item)
            else:
                self._pending[owner].append(item)
                self.stats.deferred += 1
        for item in cut:
            item.piece = True
            item.decider = max(
                (i for i in self.plan.tiles_touching(*item.bbox) if self._scheduled[i]),
                default=tile_index,
            )
            self._cut.append(item)
            self.stats.deferred += 1
        for item in owned:
            emitted += self._emit(item)
        emitted += self._release(tile_index)
        for item in late:
            emitted += self._emit(item)
        emitted += self._release_cut(tile_index)
        row_end = (tile.row + 1) * self.plan.n_cols
        if not self._scheduled[tile_index + 1 : row_end].any():
            # The row's last *scheduled* tile: trailing background tiles add nothing,
            # so what no later row can overlap goes now (else a background right
            # edge kept every nucleus of the slide in memory).
            self._prune()
        self.stats.held_max = max(self.stats.held_max, self.held())
        return Nuclei._from_items(emitted)

    def finish(self) -> Nuclei:
        """Releases every deferred view (call once after the last tile)."""
        emitted: list[_Item] = []
        for decider in sorted(self._pending):
            emitted += self._release(decider)
        emitted += self._release_cut(len(self.plan))
        self.last_tile = len(self.plan)
        self._active.clear()
        self._index.clear()
        return Nuclei._from_items(emitted)

    def held(self) -> int:
        """Nucleus views held in memory: emitted but still overlappable, deferred, cut."""
        return len(self._active) + sum(map(len, self._pending.values())) + len(self._cut)

    def low_water(self) -> int:
        """Every nucleus emitted from now on has ``bbox rmin >=`` this row."""
        # The next tile that can add views (skipped tiles add none).
        later = np.flatnonzero(self._scheduled[self.last_tile + 1 :])
        nxt = self.last_tile + 1 + int(later[0]) if later.size else len(self.plan)
        rows = [self.plan.ys[nxt // self.plan.n_cols] if nxt < len(self.plan) else self.plan.height]
        rows += [it.bbox[0] for items in self._pending.values() for it in items]
        rows += [it.bbox[0] for it in self._cut]
        return int(min(rows))

    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to continue later, as plain arrays (for ``np.savez``).

        Taken between two tiles; :meth:`from_state` rebuilds an equal stitcher.
        """
        items = [(-1, it) for it in self._active.values()]
        items += [(d, it) for d, lst in sorted(self._pending.items()) for it in lst]
        items += [(-2, it) for it in self._cut]
        rows = [
            [d, it.tile, it.type, it.gid, int(it.cut), *it.bbox, it.area, len(it.contour)]
            for d, it in items
        ]
        for row, (_, it) in zip(rows, items, strict=True):
            row += [int(it.piece), it.decider]
        ints = np.array(
            rows,
            dtype=np.int64,
        ).reshape(-1, 13)
        floats = np.array([(it.prob, it.cy, it.cx) for _, it in items], dtype=np.float64)
        flat = [it.mask.ravel() for _, it in items]
        return {
            "scalars": np.array(
                [self.next_id, self.last_tile, *dataclasses.astuple(self.stats)], dtype=np.int64
            ),
            "scheduled": np.packbits(self._scheduled),
            "match_fraction": np.array([self.match_fraction]),
            "ints": ints,
            "floats": floats.reshape(-1, 3),
            "masks": np.packbits(np.concatenate(flat) if flat else np.zeros(0, bool)),
            "contours": np.concatenate([it.contour for _, it in items]).astype(np.int32)
            if items
            else np.zeros((0, 2), np.int32),
        }

    @classmethod
    def from_state(cls, plan: TilePlan, state: dict[str, np.ndarray]) -> Stitcher:
        """Rebuilds a stitcher saved by :meth:`state` for the same plan."""
        scheduled = np.unpackbits(state["scheduled"])[: len(plan)].astype(bool)
        sc = [int(v) for v in state["scalars"]]
        self = cls(
            plan, np.flatnonzero(scheduled), match_fraction=float(state["match_fraction"][0])
        )
        self.next_id, self.last_tile = sc[0], sc[1]
        self.stats = StitchStats(*sc[2:])
        sizes = [(int(r[7]) - int(r[5])) * (int(r[8]) - int(r[6])) for r in state["ints"]]
        bits = np.unpackbits(state["masks"], count=int(sum(sizes))).astype(bool)
        pos = cpos = 0
        for row, fl, size in zip(state["ints"], state["floats"], sizes, strict=True):
            d, tile, typ, gid, cut, r0, c0, r1, c1, area, nc, piece, decider = (int(v) for v in row)
            item = _Item(
                tile=tile,
                type=typ,
                prob=float(fl[0]),
                cy=float(fl[1]),
                cx=float(fl[2]),
                bbox=(r0, c0, r1, c1),
                area=area,
                contour=state["contours"][cpos : cpos + nc].copy(),
                mask=bits[pos : pos + size].reshape(r1 - r0, c1 - c0).copy(),
                cut=bool(cut),
                gid=gid,
                piece=bool(piece),
                decider=decider,
            )
            pos, cpos = pos + size, cpos + nc
            if d == -2:
                self._cut.append(item)
            elif d == -1:
                self._active[gid] = item
                for cell in self._cells(item.bbox):
                    self._index[cell].add(gid)
            else:
                self._pending[d].append(item)
        return self

    # -------------------------------------------------------------- internals
    def _views(self, tile: Tile, inst: np.ndarray, table):
        """Yields the tile's nuclei as image-coordinate views (clipped to the image)."""
        t, H, W = self.plan.tile, self.plan.height, self.plan.width
        vh, vw = min(t, H - tile.y0), min(t, W - tile.x0)  # valid part (padding beyond)
        top, left = tile.y0 > 0, tile.x0 > 0
        bottom, right = tile.y0 + t < H, tile.x0 + t < W
        ids = np.asarray(table.id)
        self.stats.seen += len(ids)
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
                    self.stats.outside += 1
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
            yield _Item(
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

    def _cells(self, bbox: tuple[int, int, int, int]):
        rmin, cmin, rmax, cmax = bbox
        for gy in range(rmin // _GRID, (rmax - 1) // _GRID + 1):
            for gx in range(cmin // _GRID, (cmax - 1) // _GRID + 1):
                yield gy, gx

    def _duplicates(self, item: _Item) -> bool:
        """True when an emitted nucleus shares >= match_fraction of the smaller area."""
        seen: set[int] = set()
        for cell in self._cells(item.bbox):
            seen |= self._index.get(cell, set())
        for gid in seen:
            other = self._active[gid]
            if item.piece and not other.piece:
                if self._swallows(item, other):
                    return True
                # A cut piece is a sliver of a nucleus another tile saw whole: compare
                # it with that view grown by _PIECE_TOLERANCE px (the two tiles' networks
                # disagree most at the piece's cut border).
                other = _grown(other, _PIECE_TOLERANCE)
            inter = _shared_pixels(item, other)
            if not inter:
                continue
            if item.piece and other.piece:  # two cut pieces of one nucleus
                return True
            small = item.area if item.piece else min(item.area, other.area)
            if inter >= self.match_fraction * small:
                return True
        return False

    def _swallows(self, piece: _Item, whole: _Item) -> bool:
        """True when a cut piece covers >= match_fraction of a nucleus seen whole.

        Its tile's network merged that nucleus into a blob cut at the tile border;
        the whole view, from a tile that saw the nucleus entirely, wins.
        """
        return _shared_pixels(piece, whole) >= self.match_fraction * whole.area

    def _emit(self, item: _Item) -> list[_Item]:
        if self._duplicates(item):
            self.stats.duplicates += 1
            return []
        item.gid = self.next_id
        self.next_id += 1
        self.stats.emitted += 1
        self.stats.cut_emitted += int(item.cut)
        if item.cut:
            side = max(item.bbox[2] - item.bbox[0], item.bbox[3] - item.bbox[1])
            self.stats.cut_max_extent = max(self.stats.cut_max_extent, int(side))
        self.stats.reassembled += int(item.piece and not item.cut)
        self._active[item.gid] = item
        for cell in self._cells(item.bbox):
            self._index[cell].add(item.gid)
        return [item]

    def _release(self, decider: int) -> list[_Item]:
        """Emits the whole views deferred to ``decider``."""
        out: list[_Item] = []
        for it in self._pending.pop(decider, []):
            out += self._emit(it)
        return out

    def _release_cut(self, current: int) -> list[_Item]:
        """Emits groups of touching cut views once every tile that can add one is done.

        Cut views that share pixels are pieces of one nucleus; a group is merged
        into one nucleus (pixel union; class of the largest piece) when the last
        tile able to see any of its pieces has been processed.
        """
        items = self._cut
        if not items or min(it.decider for it in items) > current:
            return []
        cells: dict[tuple[int, int], list[int]] = defaultdict(list)
        for idx, it in enumerate(items):
            for cell in self._cells(it.bbox):
                cells[cell].append(idx)
        grouped: set[int] = set()
        groups: list[list[int]] = []
        for first in range(len(items)):  # grow a group from each piece that is due
            if first in grouped or items[first].decider > current:
                continue
            grouped.add(first)
            comp, stack = [first], [first]
            while stack:
                i = stack.pop()
                near = {j for cell in self._cells(items[i].bbox) for j in cells[cell]}
                for j in sorted(near - grouped):
                    if _shared_pixels(items[i], items[j]):
                        grouped.add(j)
                        comp.append(j)
                        stack.append(j)
            groups.append(sorted(comp))
        waiting = set(range(len(items))) - grouped
        out: list[_Item] = []
        for comp in sorted(groups, key=lambda g: (items[g[0]].tile, items[g[0]].bbox)):
            if max(items[i].decider for i in comp) > current:
                waiting |= set(comp)
            else:
                out += self._emit(_merge([items[i] for i in comp]))
        self._cut = [items[i] for i in sorted(waiting)]
        return out

    def _prune(self) -> None:
        """At the end of a tile row: forgets emitted nuclei nothing later can overlap."""
        nxt = self.low_water()
        for gid in [g for g, it in self._active.items() if it.bbox[2] <= nxt]:
            item = self._active.pop(gid)
            for cell in self._cells(item.bbox):
                s = self._index.get(cell)
                if s is not None:
                    s.discard(gid)
                    if not s:
                        del self._index[cell]


def _shared_pixels(a: _Item, b: _Item) -> int:
    """Number of pixels two views share."""
    y0, x0 = max(a.bbox[0], b.bbox[0]), max(a.bbox[1], b.bbox[1])
    y1, x1 = min(a.bbox[2], b.bbox[2]), min(a.bbox[3], b.bbox[3])
    if y0 >= y1 or x0 >= x1:
        return 0
    ma = a.mask[y0 - a.bbox[0] : y1 - a.bbox[0], x0 - a.bbox[1] : x1 - a.bbox[1]]
    mb = b.mask[y0 - b.bbox[0] : y1 - b.bbox[0], x0 - b.bbox[1] : x1 - b.bbox[1]]
    return int(np.count_nonzero(ma & mb))


def _merge(group: list[_Item]) -> _Item:
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
    return _Item(
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


def _grown(item: _Item, px: int) -> _Item:
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
