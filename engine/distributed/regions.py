"""Regions of a slide's tile grid, their packed tile results, and the region store.

A **region** is a block of ``side x side`` tiles of the *same* global tile plan
the single-process path uses (:func:`hvx.tiling.plan_tiles`), so tile seams,
tile pixels and tile results are those of a single-process run. Only scheduled
(tissue) tiles are listed; blocks without any are not regions.

The tile results of a region (instance map + nuclei table per tile, tile
coordinates) travel as compact bytes: one ``np.savez_compressed`` blob per
chunk of tiles (what one post-processing task made), and a region file is an
uncompressed ``.npz`` whose members are those blobs. A :class:`RegionStore`
commits region files atomically (:func:`hvx.io.atomic.atomic_file`: temp + fsync +
rename) under ``<run folder>/regions/``; existence of ``r<index>.npz`` means "committed".
:meth:`RegionStore.replay` yields the tiles back in raster order, one tile
decompressed at a time, for :func:`hvx.tiling.infer_slide` (``tiles_from=``).
No pickle anywhere: ``allow_pickle=False`` on every load.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from hvx.io.atomic import atomic_file, atomic_write
from hvx.results import NucleusTable
from hvx.tiling.plan import TilePlan

__all__ = ["Region", "RegionStore", "pack_tiles", "plan_regions", "unpack_tiles"]

_LAYOUT = "layout.json"


@dataclasses.dataclass(frozen=True)
class Region:
    """One work unit: scheduled tiles of a block of the tile grid.

    Attributes:
        index: Block index, raster order of blocks (``block_row * block_cols + block_col``).
        tiles: Raster indices of its scheduled tiles, ascending.
    """

    index: int
    tiles: tuple[int, ...]


def plan_regions(plan: TilePlan, scheduled: Sequence[int], side: int) -> list[Region]:
    """Groups the scheduled tiles into blocks of ``side x side`` tiles.

    Args:
        plan: The slide's tile plan (the single-process one).
        scheduled: Raster indices of the tiles to run (tissue tiles).
        side: Tiles per block side, >= 1.

    Returns:
        Regions with at least one scheduled tile, ascending ``index``.

    Raises:
        ValueError: For ``side < 1``.
    """
    if side < 1:
        raise ValueError(f"expected a region side of >= 1 tiles, got {side}")
    block_cols = -(-plan.n_cols // side)
    groups: dict[int, list[int]] = {}
    for i in sorted(int(t) for t in scheduled):
        r, c = divmod(i, plan.n_cols)
        groups.setdefault((r // side) * block_cols + c // side, []).append(i)
    return [Region(k, tuple(v)) for k, v in sorted(groups.items())]


def pack_tiles(indices: Sequence[int], inst: np.ndarray, tables: Sequence) -> bytes:
    """Tile results -> one compressed ``.npz`` blob.

    Args:
        indices: Raster index of each tile.
        inst: ``ndarray[N, T, T] int32`` instance maps.
        tables: ``N`` nuclei tables (:class:`hvx.results.NucleusTable`), tile coordinates.

    Returns:
        The bytes (members ``tiles``, ``counts``, ``inst_<k>``, the table columns and
        the contours as ``contour_len`` + ``contour_xy``).
    """
    n = len(indices)
    if len(inst) != n or len(tables) != n:
        raise ValueError(
            f"expected {n} instance maps and tables, got {len(inst)} and {len(tables)}"
        )
    arrays: dict[str, np.ndarray] = {
        "tiles": np.asarray(indices, np.int64),
        "counts": np.array([len(t.id) for t in tables], np.int64),
    }
    for k in range(n):
        arrays[f"inst_{k}"] = np.ascontiguousarray(inst[k], dtype=np.int32)
    cols = {
        "id": (np.int32, (-1,)),
        "type": (np.int32, (-1,)),
        "type_prob": (np.float32, (-1,)),
        "centroid": (np.float64, (-1, 2)),
        "bbox": (np.int32, (-1, 4)),
        "area": (np.int64, (-1,)),
    }
    for name, (dtype, shape) in cols.items():
        parts = [np.asarray(getattr(t, name), dtype=dtype).reshape(shape) for t in tables]
        arrays[name] = np.concatenate(parts) if parts else np.zeros((0, *shape[1:]), dtype)
    contours = [np.asarray(c, np.int32).reshape(-1, 2) for t in tables for c in t.contours]
    arrays["contour_len"] = np.array([len(c) for c in contours], np.int64)
    arrays["contour_xy"] = np.concatenate(contours) if contours else np.zeros((0, 2), np.int32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def unpack_tiles(blob: bytes | np.ndarray) -> Iterator[tuple[int, np.ndarray, object]]:
    """The inverse of :func:`pack_tiles`: yields ``(index, inst, NucleusTable)`` lazily.

    Only one tile's instance map is decompressed at a time.
    """
    data = blob.tobytes() if isinstance(blob, np.ndarray) else blob
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        tiles, counts = z["tiles"], z["counts"]
        cols = {k: z[k] for k in ("id", "type", "type_prob", "centroid", "bbox", "area")}
        clen, cxy = z["contour_len"], z["contour_xy"]
        starts = np.concatenate([[0], np.cumsum(counts)])
        cstarts = np.concatenate([[0], np.cumsum(clen)])
        for k, tile in enumerate(tiles.tolist()):
            a, b = int(starts[k]), int(starts[k + 1])
            contours = [cxy[cstarts[j] : cstarts[j + 1]] for j in range(a, b)]
            table = NucleusTable(**{name: v[a:b] for name, v in cols.items()}, contours=contours)
            yield tile, z[f"inst_{k}"], table


class RegionStore:
    """Committed regions of one slide's run, under ``<run folder>/regions/``.

    ``layout.json`` records the run hash and the region layout; a store opened
    for another run or layout discards the old region files (they are a cache of
    tile results: the run folder's own identity check, done before, decides
    whether a different run may be replaced at all).

    Args:
        folder: The slide's run folder.
        digest: The run's hash (:func:`hvx.tiling.resume.run_hash`).
        layout: JSON-ready description of the regions (side, tiles per region).
    """

    def __init__(self, folder: str | os.PathLike, digest: str, layout: dict) -> None:
        self.path = Path(folder) / "regions"
        self.path.mkdir(parents=True, exist_ok=True)
        doc = {"run": digest, "layout": layout}
        meta = self.path / _LAYOUT
        old = None
        if meta.exists():
            try:
                old = json.loads(meta.read_text())
            except ValueError:
                old = None
        if old != doc:
            self.clear()
            atomic_write(meta, json.dumps(doc, indent=1) + "\n")

    def _file(self, index: int) -> Path:
        return self.path / f"r{index:06d}.npz"

    def done(self) -> set[int]:
        """Indices of the committed regions."""
        return {int(p.stem[1:]) for p in self.path.glob("r*.npz")}

    def commit(self, index: int, blobs: Sequence[bytes]) -> bool:
        """Writes region ``index`` from its chunk blobs, atomically.

        Returns:
            False when the region was already committed (a retried duplicate: kept as is).
        """
        target = self._file(index)
        if target.exists():
            return False
        members = {f"chunk_{k}": np.frombuffer(b, np.uint8) for k, b in enumerate(blobs)}
        with atomic_file(target) as f:
            np.savez(f, **members)
        return True

    def clear(self) -> None:
        """Removes every region file (and stray temporaries)."""
        for p in [*self.path.glob("r*.npz"), *self.path.glob(".r*.tmp")]:
            p.unlink(missing_ok=True)

    def replay(self, regions: Sequence[Region], plan: TilePlan, side: int):
        """A ``tiles_from`` callable for :func:`hvx.tiling.infer_slide`.

        Yields the asked tiles in raster order. Region files of one band of
        blocks are open at a time; each tile is decompressed when yielded.

        Raises:
            ValueError: When a region file lacks a tile it should hold.
        """
        by_index = {r.index: r for r in regions}
        block_cols = -(-plan.n_cols // side)

        def tiles_from(todo: list[int]) -> Iterator[tuple[int, np.ndarray, object]]:
            want = iter(todo)
            nxt = next(want, None)
            n_bands = -(-plan.n_rows // side)
            for band in range(n_bands):
                if nxt is None:
                    return
                if nxt // plan.n_cols >= (band + 1) * side:
                    continue
                streams = {}
                for bc in range(block_cols):
                    idx = band * block_cols + bc
                    if idx in by_index:
                        streams[idx] = self._tiles_of(idx)
                heads = {k: next(s, None) for k, s in streams.items()}
                end = min((band + 1) * side, plan.n_rows) * plan.n_cols
                while nxt is not None and nxt < end:
                    bc = (nxt % plan.n_cols) // side
                    key = band * block_cols + bc
                    head = heads.get(key)
                    while head is not None and head[0] < nxt:
                        head = next(streams[key], None)
                    if head is None or head[0] != nxt:
                        raise ValueError(
                            f"expected tile {nxt} in region file {self._file(key)}, "
                            "which lacks it (a changed layout or a damaged file: delete the "
                            "regions/ folder to recompute)"
                        )
                    yield head
                    heads[key] = next(streams[key], None)
                    nxt = next(want, None)

        return tiles_from

    def _tiles_of(self, index: int) -> Iterator[tuple[int, np.ndarray, object]]:
        with np.load(self._file(index), allow_pickle=False) as z:
            names = sorted(z.files, key=lambda n: int(n.split("_")[1]))
            for name in names:
                yield from unpack_tiles(z[name])
