"""The three overlapped stages of tiled inference: reader thread, engine thread, caller.

A reader thread cuts tiles (bounded queue of ``queue_tiles`` tiles), an engine
thread runs them in batches of ``batch_size`` (bounded queue of ``queue_batches``
results; the engine releases the GIL in torch / ONNX Runtime / the native
post-processing), and the calling thread consumes ``(index, inst, table)`` in
order (:func:`stream_tiles`). An error in a stage is raised in the caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from hvx.tiling.plan import TilePlan

if TYPE_CHECKING:
    from hvx.tiling.pipeline import TilingConfig

__all__ = ["read_tile", "stream_tiles"]

_END = object()


def read_tile(reader, plan: TilePlan, index: int, pad_value: int) -> np.ndarray:
    """Tile ``index`` of ``plan``: ``ndarray[T, T, 3] uint8``, ``pad_value`` beyond the image."""
    t = plan.tile_at(index)
    h, w = min(plan.tile, plan.height - t.y0), min(plan.tile, plan.width - t.x0)
    px = np.asarray(reader.read(t.y0, t.x0, h, w))
    if (h, w) == (plan.tile, plan.tile):
        return np.ascontiguousarray(px)
    out = np.full((plan.tile, plan.tile, 3), pad_value, np.uint8)
    out[:h, :w] = px
    return out


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def stream_tiles(
    engine, reader, plan: TilePlan, tiles: Sequence[int], config: TilingConfig
) -> Iterator[tuple[int, np.ndarray, object]]:
    """Yields ``(tile index, inst ndarray[T, T], table)`` in order, stages overlapped."""
    q_tiles: queue.Queue = queue.Queue(maxsize=config.queue_tiles)
    q_out: queue.Queue = queue.Queue(maxsize=config.queue_batches)
    stop = threading.Event()

    def read_loop() -> None:
        try:
            for i in tiles:
                if not _put(q_tiles, (i, read_tile(reader, plan, i, config.pad_value)), stop):
                    return
            _put(q_tiles, _END, stop)
        except BaseException as e:
            _put(q_tiles, _Failure(e), stop)

    def infer_loop() -> None:
        batch: list[tuple[int, np.ndarray]] = []

        def run() -> bool:
            res = engine.infer(np.stack([a for _, a in batch]))
            item = ([i for i, _ in batch], res.inst, res.tables)
            batch.clear()
            return _put(q_out, item, stop)

        try:
            while not stop.is_set():
                try:
                    item = q_tiles.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _END or isinstance(item, _Failure):
                    if batch and not isinstance(item, _Failure) and not run():
                        return
                    _put(q_out, item, stop)
                    return
                batch.append(item)
                if len(batch) == config.batch_size and not run():
                    return
        except BaseException as e:
            _put(q_out, _Failure(e), stop)

    threads = [
        threading.Thread(target=read_loop, name="hvx-tile-reader", daemon=True),
        threading.Thread(target=infer_loop, name="hvx-engine", daemon=True),
    ]
    for th in threads:
        th.start()
    try:
        while True:
            item = q_out.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            idx, inst, tables = item
            for k, i in enumerate(idx):
                yield i, np.asarray(inst[k]), tables[k]
    finally:
        stop.set()
        for th in threads:
            th.join()
