"""What runs on the Ray workers: the engine actor and the post-processing task.

:class:`EngineWorker` holds one loaded :class:`hvx.Engine` and the open slide
readers; :meth:`EngineWorker.heads` reads a chunk of tiles of a region (the
same pixels as the single-process path, :func:`hvx.tiling.stages.read_tile`)
and runs preprocessing + the network, returning the three heads as numpy
arrays. Ray puts them in the object store; :func:`postprocess_chunk`, a CPU
task, turns them into instance maps and nuclei tables (exactly what
``Engine.infer`` does after the heads) and returns them packed
(:func:`hvx.distributed.regions.pack_tiles`). These are plain classes and
functions; :mod:`hvx.distributed.driver` wraps them with ``ray.remote``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import socket
import threading
import time

import numpy as np

from hvx import Engine
from hvx.distributed.regions import pack_tiles
from hvx.io.slides import open_image
from hvx.postprocess import postprocess
from hvx.stain import NormalizedReader, StainNormalizer
from hvx.tiling.stages import read_tile

__all__ = ["EngineWorker", "SlideSource", "peak_rss_mb", "postprocess_chunk", "stain_spec"]


@dataclasses.dataclass(frozen=True)
class SlideSource:
    """How a worker opens a slide: the arguments of :func:`hvx.io.slides.open_image`.

    Attributes:
        path: Slide or image file (the same path on every node: shared storage).
        level: Pyramid level, or None.
        target_mpp: Working resolution (the model's), or None.
        mpp: Level-0 microns per pixel overriding the metadata, or None.
        stain: Stain normalisation as JSON (``{"method", "target", "source"}``: the
            slide's fit, made once by the driver, :func:`stain_spec`), or None.
    """

    path: str
    level: int | None = None
    target_mpp: float | None = None
    mpp: float | None = None
    stain: str | None = None

    def open(self):
        """A reader (:mod:`hvx.slide`), stain-normalised with the driver's fit when asked."""
        reader = open_image(self.path, level=self.level, target_mpp=self.target_mpp, mpp=self.mpp)
        if self.stain is None:
            return reader
        spec = json.loads(self.stain)
        norm = StainNormalizer(spec["method"], spec["target"])
        return NormalizedReader(reader, norm, source=spec["source"])


def stain_spec(source: SlideSource, normalizer: StainNormalizer | None) -> SlideSource:
    """``source`` with the normaliser and its fit on the slide's tissue (once, here)."""
    if normalizer is None:
        return source
    with source.open() as reader:
        fitted = NormalizedReader(reader, normalizer)
        spec = {**normalizer.identity(), "source": fitted.source}
    return dataclasses.replace(source, stain=json.dumps(spec))


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _where() -> dict:
    return {"node": socket.gethostname(), "pid": os.getpid()}


class EngineWorker:
    """One loaded engine; runs the network on chunks of tiles.

    Args:
        model: Bundle folder or plan file (None: the bundled default model).
        backend: As :meth:`hvx.Engine.load`.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        precision: As :meth:`hvx.Engine.load`.
        max_readers: Slides kept open at once (least recently used closed first).
    """

    def __init__(
        self,
        model: str | None = None,
        backend: str = "auto",
        device: str = "auto",
        precision: str = "auto",
        max_readers: int = 4,
    ) -> None:

        self.engine = Engine.load(model, backend=backend, device=device, precision=precision)
        self.max_readers = int(max_readers)
        self._readers: dict[SlideSource, tuple[object, threading.Lock]] = {}
        self._lock = threading.Lock()

    def meta(self) -> dict:
        """What the driver needs of the model (class names, identity, configs)."""
        e = self.engine
        return {
            "class_names": tuple(e.class_names),
            "class_colors": tuple(e.class_colors),
            "source": e.source,
            "mpp": e.mpp,
            "backend": e.backend,
            "precision": e.precision,
            "device": e.device,
            "preprocess_config": e.preprocess_config,
            "postprocess_config": e.postprocess_config,
            **_where(),
        }

    def _reader(self, source: SlideSource):
        with self._lock:
            if source in self._readers:
                item = self._readers.pop(source)
            else:
                item = (source.open(), threading.Lock())
            self._readers[source] = item  # most recent last
            while len(self._readers) > self.max_readers:
                old = next(iter(self._readers))
                self._readers.pop(old)[0].close()
        return item

    def heads(self, source: SlideSource, plan, tiles: list[int], pad_value: int = 255):
        """Reads ``tiles`` of ``plan`` and runs the network on them.

        Args:
            source: The slide.
            plan: Its :class:`hvx.tiling.TilePlan` (the single-process one).
            tiles: Raster indices of the tiles, one engine call.
            pad_value: Padding of tiles past the image edge.

        Returns:
            ``(info, heads)``: ``info`` a small dict (seconds reading / in the
            network, peak RSS, node, pid); ``heads`` a tuple ``(np_prob
            float32[N, T, T], hv float32[N, 2, T, T], tp_prob float32[N, C, T, T])``.
        """
        t0 = time.perf_counter()
        reader, lock = self._reader(source)
        with lock:
            batch = np.stack([read_tile(reader, plan, i, pad_value) for i in tiles])
        t1 = time.perf_counter()
        h = self.engine.heads(batch)[0].numpy()
        out = tuple(np.ascontiguousarray(a) for a in (h.np_prob, h.hv, h.tp_prob))
        info = {
            "read_s": t1 - t0,
            "net_s": time.perf_counter() - t1,
            "bytes": int(sum(a.nbytes for a in out)),
            "peak_rss_mb": peak_rss_mb(),
            **_where(),
        }
        return info, out

    def peak(self) -> dict:
        """Peak memory of this worker process."""
        return {"peak_rss_mb": peak_rss_mb(), **_where()}

    def close(self) -> None:
        """Closes the open slides."""
        with self._lock:
            for reader, _ in self._readers.values():
                reader.close()
            self._readers.clear()


def postprocess_chunk(tiles: list[int], heads: tuple, config, num_threads: int = 1) -> dict:
    """Heads of a chunk -> packed tile results (a Ray CPU task).

    Args:
        tiles: Raster indices of the chunk's tiles.
        heads: ``(np_prob, hv, tp_prob)`` from :meth:`EngineWorker.heads`.
        config: The engine's ``PostprocessConfig``.
        num_threads: Post-processing threads.

    Returns:
        ``{"blob": bytes, "tiles": [...], "nuclei": int, "pp_s": float,
        "peak_rss_mb": float, "node", "pid"}``.
    """
    t0 = time.perf_counter()
    np_prob, hv, tp = heads
    res = postprocess(np_prob, hv, tp, config, num_threads=num_threads)
    blob = pack_tiles(tiles, res.inst, res.tables)
    return {
        "blob": blob,
        "tiles": list(tiles),
        "nuclei": int(sum(len(t.id) for t in res.tables)),
        "pp_s": time.perf_counter() - t0,
        "peak_rss_mb": peak_rss_mb(),
        **_where(),
    }
