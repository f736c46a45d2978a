"""The Ray driver: a cohort of slides -> regions -> engine actors -> CPU tasks -> run folders.

Per slide (``prepare``): open it at the model's resolution, plan the *same*
tiles as ``hvx slide`` (:func:`hvx.tiling.plan_tiles`), open its run folder
with the same identity as the single-process run (a different run there is
refused before any work), list the tissue tiles, group them into regions
(:func:`hvx.distributed.regions.plan_regions`) and skip the regions already
committed.

Scheduling (``_Scheduler``): every region is cut into chunks of
``config.batch_size`` tiles. Each engine actor has at most ``window`` chunks in
flight (queued on it, or heads waiting for post-processing), so it always has
the next chunk queued while post-processing of the previous ones runs as CPU
tasks elsewhere; heads go actor -> object store -> task, never through the
driver. Finished chunks come back packed (a few KiB per tile); when a region's
chunks are all back the driver commits its file atomically. A failure of the
Ray system (dead actor, node, worker or lost object) puts the chunk back in the
queue (other actors take it); the dead actor is retired. An error raised by
hvx's own code stops the run.

Assembly: once all regions of a slide are committed, a driver thread replays
their tiles in raster order through :func:`hvx.tiling.infer_slide`
(``tiles_from=``): the same stitcher and writers as a single-process run, so
the GeoJSON / CSV / label TIFF are byte-identical to it.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hvx.distributed.regions import Region, RegionStore, plan_regions
from hvx.distributed.workers import SlideSource, postprocess_chunk, stain_spec
from hvx.tiling.pipeline import _align, engine_mpp, run_identity, schedule_tiles
from hvx.tiling.plan import plan_tiles
from hvx.tiling.resume import RunFolder
from hvx.tiling.slide_run import infer_slide

log = logging.getLogger("hvx.distributed")

__all__ = ["ModelInfo", "SlideJob", "prepare_slide"]


class ModelInfo:
    """The driver's stand-in for an engine: what the run identity and writers read.

    Built from :meth:`hvx.distributed.workers.EngineWorker.meta`; carries no network.
    """

    def __init__(self, meta: dict) -> None:
        self.class_names = tuple(meta["class_names"])
        self.class_colors = tuple(tuple(c) for c in meta["class_colors"])
        self.source = meta["source"]
        self.mpp = meta["mpp"]
        self.backend = meta["backend"]
        self.precision = meta["precision"]
        self.preprocess_config = meta["preprocess_config"]
        self.postprocess_config = meta["postprocess_config"]

    def key(self) -> tuple:
        """What every actor of one run must agree on."""
        return (self.class_names, self.source, self.mpp, self.backend, self.precision)


@dataclasses.dataclass
class SlideJob:
    """One slide of the cohort and where its run stands.

    Attributes:
        path: The slide file.
        folder: Its run folder.
        stem: Base name of its output files.
        source: How workers open it.
        plan: The tile plan (the single-process one).
        regions: All its regions.
        store: Its committed regions.
        todo: Indices of the regions still to compute.
        area_mm2: Image area at the working resolution (None without mpp).
        summary: The finished run's summary (set when done).
        seconds: Wall seconds of this slide in this run (first chunk -> outputs).
    """

    path: Path
    folder: Path
    stem: str
    source: SlideSource
    plan: object
    regions: list[Region]
    store: RegionStore
    todo: set[int]
    area_mm2: float | None
    summary: dict | None = None
    seconds: float = 0.0
    started: float | None = None
    run: object = None
    side: int = 1

    def release(self) -> None:
        """Releases the run folder's lock held since :func:`prepare_slide` (idempotent)."""
        if self.run is not None:
            self.run.release()


def _output_names(stem: str) -> tuple[str, ...]:
    """The files :func:`hvx.tiling.infer_slide` writes (checked for strays)."""
    return (f"{stem}.geojson", f"{stem}.csv", f"{stem}_masks.bin", f"{stem}_labels.tif")


def prepare_slide(
    path: Path,
    folder: Path,
    model: ModelInfo,
    *,
    config,
    formats: Sequence[str],
    labels: bool,
    stem: str,
    level: int | None,
    mpp: float | None,
    region_px: int,
    overwrite: bool,
    stain=None,
) -> SlideJob:
    """Plans one slide and opens its run folder (refusing a different run there).

    Raises:
        hvx.io.slides.SlideReadError: Unreadable slide, bad level, missing mpp.
        hvx.tiling.RunMismatchError: ``folder`` holds a different run.
    """
    target = None if level is not None else engine_mpp(model)
    source = SlideSource(str(Path(path).resolve()), level, target, mpp)
    source = stain_spec(source, stain)  # fitted once here; workers reuse the fit
    with source.open() as reader:
        plan = plan_tiles(
            reader.height,
            reader.width,
            config.tile,
            config.overlap,
            rows_per_region=config.rows_per_region,
            align=_align(model, config),
        )
        identity = run_identity(model, reader, config, formats, labels, stem)
        # Locks the folder (hvx.tiling.resume.FolderLock) until the slide is assembled.
        run = RunFolder.open(folder, identity, _output_names(stem), overwrite=overwrite)
        try:
            side = max(1, region_px // (config.tile - config.overlap))
            layout = {"side_tiles": side, "tiles": plan.to_dict()}
            store = RegionStore(folder, run.digest, layout)
            done = run.summary()
            regions = (
                []
                if done is not None
                else plan_regions(plan, schedule_tiles(plan, reader, config), side)
            )
            area = (
                None if reader.mpp is None else reader.height * reader.width * reader.mpp**2 / 1e6
            )
        except BaseException:
            run.release()
            raise
    job = SlideJob(
        path=Path(path),
        folder=Path(folder),
        stem=stem,
        source=source,
        plan=plan,
        regions=regions,
        store=store,
        todo={r.index for r in regions} - store.done(),
        area_mm2=area,
        summary=done,
        run=run,
        side=side,
    )
    if done is not None:
        job.release()
    return job


def assemble(job: SlideJob, model: ModelInfo, *, config, formats, labels) -> dict:
    """Stitches a slide's committed regions into its outputs (same code as one machine)."""
    replay = job.store.replay(job.regions, job.plan, job.side)
    job.release()  # infer_slide takes the folder's lock itself
    with job.source.open() as reader:
        return infer_slide(
            model,
            reader,
            job.folder,
            config=config,
            formats=formats,
            labels=labels,
            stem=job.stem,
            progress=False,
            tiles_from=replay,
        )


@dataclasses.dataclass
class _Chunk:
    slide: int
    region: int
    part: int
    n_parts: int
    tiles: tuple[int, ...]
    attempts: int = 0


def _is_system_error(err: BaseException) -> bool:
    """True for failures of the Ray system (retry elsewhere), False for hvx's own errors."""
    import ray.exceptions as rex

    system = (
        rex.RayActorError,
        rex.ObjectLostError,
        rex.WorkerCrashedError,
        rex.NodeDiedError,
        rex.RaySystemError,
        rex.OutOfMemoryError,
        rex.TaskUnschedulableError,
        rex.ActorUnschedulableError,
    )
    if isinstance(err, system):
        return True
    if isinstance(err, rex.RayTaskError):
        cause = getattr(err, "cause", None)
        return isinstance(cause, system)
    return False


class _Scheduler:
    """Feeds chunks to the engine actors with a bounded window each; commits regions."""

    def __init__(
        self,
        jobs: list[SlideJob],
        actors: list,
        model: ModelInfo,
        *,
        config,
        window: int,
        max_attempts: int,
        pp_options: dict,
        on_region: Callable[[SlideJob, int], None],
    ) -> None:
        import ray

        self.jobs, self.actors, self.model, self.config = jobs, actors, model, config
        self.window, self.max_attempts = window, max_attempts
        self.on_region = on_region
        self.pp = ray.remote(postprocess_chunk).options(**pp_options)
        self.queue: collections.deque[_Chunk] = collections.deque()
        for s, job in enumerate(jobs):
            for region in job.regions:
                if region.index not in job.todo:
                    continue
                bs = config.batch_size
                parts = [region.tiles[k : k + bs] for k in range(0, len(region.tiles), bs)]
                for p, tiles in enumerate(parts):
                    self.queue.append(_Chunk(s, region.index, p, len(parts), tuple(tiles)))
        self.load = dict.fromkeys(range(len(actors)), 0)
        self.alive = set(range(len(actors)))
        self.pending: dict = {}
        self.parts: dict[tuple[int, int], dict[int, bytes]] = {}
        self.stats = collections.defaultdict(float)
        self.workers: dict[tuple, dict] = {}
        self.retried = 0

    def _submit(self) -> None:
        for a in sorted(self.alive, key=lambda k: self.load[k]):
            while self.load[a] < self.window and self.queue:
                ch = self.queue.popleft()
                job = self.jobs[ch.slide]
                job.started = job.started or time.perf_counter()
                info, heads = (
                    self.actors[a]
                    .heads.options(num_returns=2)
                    .remote(job.source, job.plan, list(ch.tiles), self.config.pad_value)
                )
                self.pending[info] = ("net", ch, a, heads, time.perf_counter())
                self.load[a] += 1

    def _retry(self, ch: _Chunk, err: BaseException) -> None:
        ch.attempts += 1
        self.retried += 1
        if ch.attempts >= self.max_attempts:
            raise RuntimeError(
                f"expected region {ch.region} of {self.jobs[ch.slide].path.name} to finish "
                f"within {self.max_attempts} attempts, got: {err}"
            ) from err
        log.warning("retrying a chunk of region %d after: %s", ch.region, type(err).__name__)
        self.queue.appendleft(ch)

    def _note(self, info: dict, role: str) -> None:
        key = (info["node"], info["pid"])
        w = self.workers.setdefault(key, {"node": key[0], "pid": key[1], "role": role})
        w["peak_rss_mb"] = max(w.get("peak_rss_mb", 0.0), float(info["peak_rss_mb"]))

    def run(self) -> None:
        """Runs until every chunk is committed (or raises)."""
        import ray

        while self.queue or self.pending:
            if not self.alive:
                raise RuntimeError("expected at least one live engine worker, got none left")
            self._submit()
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=5.0)
            for ref in ready:
                self._handle(ref, *self.pending.pop(ref))

    def _handle(self, ref, kind: str, ch: _Chunk, a: int, heads, t0: float) -> None:
        import ray

        try:
            out = ray.get(ref)
        except Exception as err:
            if not _is_system_error(err):
                raise
            if kind == "net" and a in self.alive:
                import ray.exceptions as rex

                if isinstance(err, rex.RayActorError):
                    log.warning("engine worker %d died; its chunks go to the others", a)
                    self.alive.discard(a)
            self.load[a] -= 1
            self._retry(ch, err)
            return
        if kind == "net":
            self._note(out, "engine")
            for k in ("read_s", "net_s", "bytes"):
                self.stats[k] += out[k]
            self.stats["net_latency_s"] += time.perf_counter() - t0
            pp = self.pp.remote(list(ch.tiles), heads, self.model.postprocess_config)
            self.pending[pp] = ("pp", ch, a, None, t0)
            return
        self.load[a] -= 1
        self._note(out, "postprocess")
        self.stats["pp_s"] += out["pp_s"]
        self.stats["chunk_latency_s"] += time.perf_counter() - t0
        self.stats["chunks"] += 1
        self.stats["tiles"] += len(ch.tiles)
        self.stats["packed_bytes"] += len(out["blob"])
        got = self.parts.setdefault((ch.slide, ch.region), {})
        got[ch.part] = out["blob"]
        if len(got) == ch.n_parts:
            job = self.jobs[ch.slide]
            blobs = [got[p] for p in range(ch.n_parts)]
            del self.parts[(ch.slide, ch.region)]
            t = time.perf_counter()
            if job.store.commit(ch.region, blobs):
                self.stats["regions"] += 1
            self.stats["commit_s"] += time.perf_counter() - t
            job.todo.discard(ch.region)
            self.on_region(job, ch.region)
