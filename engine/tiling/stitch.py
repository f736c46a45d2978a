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
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from hvx.results import Nuclei
from hvx.tiling.plan import TilePlan
from hvx.tiling.views import (
    View,
    grown,
    merge_views,
    nuclei_from_views,
    shared_pixels,
    tile_views,
)

__all__ = ["StitchStats", "Stitcher"]

_GRID = 64  # spatial-index cell size in pixels
_PIECE_TOLERANCE = 2  # px a whole view is grown by when a cut piece is compared with it


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
        self._active: dict[int, View] = {}  # gid -> emitted item still overlappable
        self._index: dict[tuple[int, int], set[int]] = defaultdict(set)
        self._pending: dict[int, list[View]] = defaultdict(list)  # deciding tile -> views
        self._cut: list[View] = []  # cut views waiting for the other pieces

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
        emitted: list[View] = []
        for skipped in range(self.last_tile + 1, tile_index):
            emitted += self._release(skipped)
        tile = self.plan.tile_at(tile_index)
        self.last_tile = tile_index
        self.stats.tiles += 1

        owned, late, cut = [], [], []
        for item in tile_views(self.plan, tile, inst, table, self.stats):
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
        return nuclei_from_views(emitted)

    def finish(self) -> Nuclei:
        """Releases every deferred view (call once after the last tile)."""
        emitted: list[View] = []
        for decider in sorted(self._pending):
            emitted += self._release(decider)
        emitted += self._release_cut(len(self.plan))
        self.last_tile = len(self.plan)
        self._active.clear()
        self._index.clear()
        return nuclei_from_views(emitted)

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
            item = View(
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
    def _cells(self, bbox: tuple[int, int, int, int]):
        rmin, cmin, rmax, cmax = bbox
        for gy in range(rmin // _GRID, (rmax - 1) // _GRID + 1):
            for gx in range(cmin // _GRID, (cmax - 1) // _GRID + 1):
                yield gy, gx

    def _duplicates(self, item: View) -> bool:
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
                other = grown(other, _PIECE_TOLERANCE)
            inter = shared_pixels(item, other)
            if not inter:
                continue
            if item.piece and other.piece:  # two cut pieces of one nucleus
                return True
            small = item.area if item.piece else min(item.area, other.area)
            if inter >= self.match_fraction * small:
                return True
        return False

    def _swallows(self, piece: View, whole: View) -> bool:
        """True when a cut piece covers >= match_fraction of a nucleus seen whole.

        Its tile's network merged that nucleus into a blob cut at the tile border;
        the whole view, from a tile that saw the nucleus entirely, wins.
        """
        return shared_pixels(piece, whole) >= self.match_fraction * whole.area

    def _emit(self, item: View) -> list[View]:
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

    def _release(self, decider: int) -> list[View]:
        """Emits the whole views deferred to ``decider``."""
        out: list[View] = []
        for it in self._pending.pop(decider, []):
            out += self._emit(it)
        return out

    def _release_cut(self, current: int) -> list[View]:
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
                    if shared_pixels(items[i], items[j]):
                        grouped.add(j)
                        comp.append(j)
                        stack.append(j)
            groups.append(sorted(comp))
        waiting = set(range(len(items))) - grouped
        out: list[View] = []
        for comp in sorted(groups, key=lambda g: (items[g[0]].tile, items[g[0]].bbox)):
            if max(items[i].decider for i in comp) > current:
                waiting |= set(comp)
            else:
                out += self._emit(merge_views([items[i] for i in comp]))
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
