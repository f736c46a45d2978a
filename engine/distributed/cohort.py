"""``run_slides``: a cohort of slides on Ray, resumable, outputs equal to ``hvx slide``."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from hvx.distributed.driver import (
    ModelInfo,
    SlideJob,
    _Scheduler,
    assemble,
    prepare_slide,
)
from hvx.distributed.workers import EngineWorker, peak_rss_mb
from hvx.io.atomic import atomic_write
from hvx.tiling import TilingConfig

log = logging.getLogger("hvx.distributed")

__all__ = ["format_table", "output_folders", "run_slides"]


def _import_ray():
    try:
        import ray
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "hvx.distributed needs Ray: pip install 'hvx[ray]' (expected `import ray` to work, "
            f"got {e})"
        ) from e
    return ray


def _connect(ray, address: str | None, num_cpus: int | None) -> bool:
    """Joins ``address`` or starts a local Ray; True when this call started it."""
    if ray.is_initialized():
        return False
    kw = {"include_dashboard": False, "log_to_driver": False}
    if address and address != "local":
        ray.init(address=address, **kw)
    else:
        ray.init(address="local", num_cpus=num_cpus, **kw)  # never a stale cluster file
    return True


def _default_workers(ray) -> tuple[int, float]:
    """Engine actors and GPUs per actor: one per GPU, else one per two CPUs."""
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if gpus:
        return gpus, 1.0
    return max(1, int(res.get("CPU", 1)) // 2), 0.0


def output_folders(slides: Sequence[Path], out: Path) -> list[tuple[Path, Path]]:
    """One slide: ``out`` itself; several: ``out/<slide stem>/`` (stems must differ)."""
    if len(slides) == 1:
        return [(slides[0], out)]
    seen: dict[str, Path] = {}
    for s in slides:
        if s.stem in seen:
            raise ValueError(
                f"two slides share the output folder name {s.stem!r}: {seen[s.stem]}, {s}"
            )
        seen[s.stem] = s
    return [(s, out / s.stem) for s in slides]


def run_slides(
    slides: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    address: str | None = None,
    workers: int | None = None,
    config=None,
    region_px: int = 4096,
    formats: Sequence[str] = ("geojson", "csv"),
    labels: bool = False,
    stem: str = "nuclei",
    level: int | None = None,
    mpp: float | None = None,
    backend: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    window: int = 4,
    max_attempts: int = 4,
    num_cpus: int | None = None,
    actor_options: dict | None = None,
    pp_options: dict | None = None,
    assemble_on: str = "driver",
    stain=None,
) -> dict:
    """Segments a cohort of slides on Ray: region-parallel, resumable.

    Each slide's outputs (``<stem>.geojson``, ``<stem>.csv``, optionally
    ``<stem>_labels.tif``, plus ``run.json``, ``summary.json``, ``regions/``) go
    to ``out`` (one slide) or ``out/<slide stem>/`` (several), and equal those of
    ``hvx slide`` / :func:`hvx.tiling.infer_slide` on one machine with the same
    model, backend and parameters. Rerunning after an interruption skips the
    committed regions and finished slides.

    Args:
        slides: Slide or large-image files (readable at the same path by every node).
        out: Output folder.
        model: Bundle folder or plan file (None: the bundled default model).
        address: Ray cluster to join (``"auto"``, ``"host:port"``); None or
            ``"local"`` starts a local Ray. An already initialised Ray is used as is.
        workers: Engine actors (default: one per GPU, else one per two CPUs).
        config: :class:`hvx.tiling.TilingConfig` (default: its defaults).
        region_px: Region side in pixels (rounded down to whole tile strides).
        formats: Any of ``"geojson"``, ``"csv"``.
        labels: Also write the label TIFF.
        stem: Base name of each slide's output files.
        level: Slide pyramid level (default: the level matching the model's mpp).
        mpp: Level-0 microns per pixel, for slides without that metadata.
        backend: Engine backend, as :meth:`hvx.Engine.load`.
        device: Engine device (``"auto"``: a GPU where the actor has one).
        precision: Engine precision.
        overwrite: Replace different runs in the output folders instead of refusing.
        progress: Show the cohort's progress bar.
        window: Chunks in flight per engine actor (back-pressure), >= 1.
        max_attempts: Attempts per chunk before the run fails.
        num_cpus: CPUs of a local Ray started here (default: all).
        actor_options: Extra ``.options()`` of the engine actors (e.g. ``resources``).
        pp_options: Extra ``.options()`` of the post-processing tasks.
        assemble_on: Where each slide is stitched and written once its regions are
            in: ``"driver"`` (a driver thread, one slide at a time) or ``"cluster"``
            (one Ray CPU task per slide, in parallel; ``out`` must then be on
            storage every node shares).
        stain: A :class:`hvx.stain.StainNormalizer`: each slide is fitted once on
            its tissue (by the driver) and every region mapped with that fit, as
            ``hvx slide --stain-norm`` does on one machine; None: off.

    Returns:
        ``{"slides": [per-slide rows], "workers": [peak memory per worker process],
        "timing": {...}, "seconds": float}``; also written to ``out/cohort.json``.

    Raises:
        hvx.io.slides.SlideReadError: An unreadable slide (before any work starts).
        hvx.tiling.RunMismatchError: An output folder holds a different run.
        RuntimeError: No engine worker left, or a chunk failed ``max_attempts`` times.
        ImportError: Ray is not installed.
    """
    ray = _import_ray()
    run = _RunOptions(
        config=config or TilingConfig(),
        formats=tuple(formats),
        labels=labels,
        window=window,
        max_attempts=max_attempts,
        pp_options=dict(pp_options or {}),
        progress=progress,
        assemble_on=assemble_on,
    )
    paths = [Path(s) for s in slides]
    if not paths:
        raise ValueError("expected at least one slide, got none")
    out = Path(out)
    pairs = output_folders(paths, out)
    t0 = time.perf_counter()
    started = _connect(ray, address, num_cpus)
    actors: list = []
    jobs: list[SlideJob] = []
    try:
        engine_args = (None if model is None else str(Path(model).resolve()), backend, device)
        actors, info = _start_workers(ray, (*engine_args, precision), workers, actor_options)
        for p, f in pairs:  # one by one, so a refusal still releases the earlier locks
            jobs.append(
                prepare_slide(
                    p,
                    f,
                    info,
                    config=run.config,
                    formats=run.formats,
                    labels=labels,
                    stem=stem,
                    level=level,
                    mpp=mpp,
                    region_px=region_px,
                    overwrite=overwrite,
                    stain=stain,
                )
            )
        timing = _run(ray, jobs, actors, info, run)
    finally:
        for job in jobs:
            job.release()
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()
    result = _result(jobs, timing, info, len(actors), time.perf_counter() - t0)
    atomic_write(out / "cohort.json", json.dumps(result, indent=1) + "\n")
    return result


@dataclasses.dataclass(frozen=True)
class _RunOptions:
    """How a cohort runs once its workers and slides are ready (see ``run_slides``)."""

    config: object
    formats: tuple[str, ...]
    labels: bool
    window: int
    max_attempts: int
    pp_options: dict
    progress: bool
    assemble_on: str

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"expected window >= 1, got {self.window}")
        if self.assemble_on not in ("driver", "cluster"):
            raise ValueError(
                f"expected assemble_on 'driver' or 'cluster', got {self.assemble_on!r}"
            )
        bad = [f for f in self.formats if f not in ("geojson", "csv")]
        if bad:
            raise ValueError(f"expected formats from ['geojson', 'csv'], got {bad}")


def _start_workers(ray, engine_args: tuple, workers: int | None, actor_options: dict | None):
    """Starts the engine actors; returns ``(actors, ModelInfo)`` once all loaded the same."""
    n, gpus = _default_workers(ray)
    opts = {"num_cpus": 1, "num_gpus": gpus, "max_concurrency": 2, "max_restarts": 0}
    opts.update(actor_options or {})
    cls = ray.remote(EngineWorker).options(**opts)
    actors = [cls.remote(*engine_args) for _ in range(workers or n)]
    try:
        infos = [ModelInfo(x) for x in ray.get([a.meta.remote() for a in actors])]
        if len({i.key() for i in infos}) != 1:
            raise RuntimeError(
                "expected every engine worker to load the same model the same way, got "
                f"{sorted({i.key() for i in infos})}"
            )
    except BaseException:
        for a in actors:
            ray.kill(a)
        raise
    return actors, infos[0]


def _result(jobs: list[SlideJob], timing: dict, info, n_actors: int, seconds: float) -> dict:
    """The cohort record (``cohort.json``): per-slide rows, worker memory, timing."""
    workers_mem = timing.pop("workers")
    driver = {
        "node": "driver",
        "pid": os.getpid(),
        "role": "driver",
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    return {
        "slides": [_row(j) for j in jobs],
        "workers": [*workers_mem, driver],
        "timing": timing,
        "seconds": round(seconds, 3),
        "engine": {"backend": info.backend, "precision": info.precision, "workers": n_actors},
    }


def _progress_bar(jobs: list[SlideJob], progress: bool):
    """The cohort's tqdm bar over the regions still to run."""
    from tqdm import tqdm

    total = sum(len(j.todo) for j in jobs)
    done_before = sum(len(j.regions) - len(j.todo) for j in jobs)
    return tqdm(
        total=total,
        unit="region",
        desc="hvx cohort" + (f" (resumed, {done_before} regions done)" if done_before else ""),
        disable=None if progress else True,
        dynamic_ncols=True,
        mininterval=0.5,
    )


def _run(ray, jobs: list[SlideJob], actors: list, info, run: _RunOptions) -> dict:
    """Schedules every slide's regions on the actors and assembles each finished slide.

    Returns:
        Timing statistics, ``retried_chunks`` and ``workers`` (peak memory per process).
    """
    finished = sum(j.summary is not None for j in jobs)
    bar = _progress_bar(jobs, run.progress)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hvx-assemble")
    futures: dict[int, concurrent.futures.Future] = {}

    remote = None
    if run.assemble_on == "cluster":  # one CPU task per slide; needs --out on shared storage
        remote = ray.remote(assemble).options(num_cpus=1, max_retries=3)

    def slides_done() -> str:
        return f"{finished + sum(f.done() for f in futures.values())}/{len(jobs)}"

    def start_assembly(k: int) -> None:
        job = jobs[k]
        job.started = job.started or time.perf_counter()
        kw = {"config": run.config, "formats": run.formats, "labels": run.labels}
        if remote is None:
            futures[k] = pool.submit(assemble, job, info, **kw)
        else:
            job.release()  # the task's infer_slide locks the folder where it runs
            futures[k] = remote.remote(dataclasses.replace(job, run=None), info, **kw).future()

    def on_region(job: SlideJob, region: int) -> None:
        bar.update(1)
        if not job.todo:
            start_assembly(jobs.index(job))
        bar.set_postfix(slides=slides_done(), refresh=False)

    sched = _Scheduler(
        jobs,
        actors,
        info,
        config=run.config,
        window=run.window,
        max_attempts=run.max_attempts,
        pp_options={"num_cpus": 1, **run.pp_options},
        on_region=on_region,
    )
    try:
        for k, job in enumerate(jobs):
            if job.summary is None and not job.todo:  # all regions committed before
                start_assembly(k)
        sched.run()
        for k, fut in futures.items():
            jobs[k].summary = fut.result()
            jobs[k].seconds = time.perf_counter() - jobs[k].started
            bar.set_postfix(slides=slides_done())
    finally:
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)
    return _timing(ray, sched, actors)


def _timing(ray, sched, actors: list) -> dict:
    """The scheduler's statistics plus each live actor's peak memory."""
    try:
        peaks = ray.get(
            [a.peak.remote() for i, a in enumerate(actors) if i in sched.alive], timeout=60
        )
    except Exception:
        peaks = []
    for p in peaks:
        sched._note(p, "engine")
    timing = {k: round(v, 4) for k, v in sched.stats.items()}
    timing["retried_chunks"] = sched.retried
    timing["workers"] = [
        {**w, "peak_rss_mb": round(w["peak_rss_mb"], 1)} for w in sched.workers.values()
    ]
    return timing


def _row(job: SlideJob) -> dict:
    s = job.summary or {}
    secs = job.seconds
    return {
        "slide": str(job.path),
        "folder": str(job.folder),
        "nuclei": s.get("nuclei"),
        "regions": len(job.regions),
        "seconds": round(secs, 3),
        "assemble_s": s.get("seconds"),
        "tiles": s.get("tiles_run"),
        "area_mm2": None if job.area_mm2 is None else round(job.area_mm2, 4),
        "mm2_per_s": None if not (job.area_mm2 and secs) else round(job.area_mm2 / secs, 4),
    }


def format_table(result: dict) -> str:
    """The per-slide summary table (and peak memory per worker) as text."""
    lines = [f"{'slide':<32} {'nuclei':>9} {'regions':>7} {'seconds':>9} {'mm2/s':>8}"]
    for r in result["slides"]:
        name = Path(r["slide"]).name[:32]
        rate = "-" if r["mm2_per_s"] is None else f"{r['mm2_per_s']:.4f}"
        secs = "done" if not r["seconds"] else f"{r['seconds']:.1f}"
        lines.append(f"{name:<32} {r['nuclei'] or 0:>9} {r['regions']:>7} {secs:>9} {rate:>8}")
    mem = ", ".join(
        f"{w['role']}@{w['node']}:{w['pid']} {w['peak_rss_mb']:.0f} MiB" for w in result["workers"]
    )
    lines.append(f"peak memory per worker: {mem}")
    lines.append(
        f"total {result['seconds']:.1f} s on {result['engine']['workers']} engine worker(s)"
    )
    return "\n".join(lines)
