"""Tiled inference of a slide streamed to an output folder, resumable: :func:`infer_slide`.

The stages of :mod:`hvx.tiling.stages` feed the stitcher; each batch of emitted
nuclei goes to the streamed writers of :mod:`hvx.io.streams`; after each region
(``rows_per_region`` tile rows) the part files are checkpointed with the
stitcher state (:mod:`hvx.tiling.resume`), so a rerun continues from there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from hvx.io.streams import CSVStream, GeoJSONStream, MaskStream, write_label_tiff
from hvx.results import Nuclei
from hvx.tiling.pipeline import (
    TilingConfig,
    _align,
    _engine_meta,
    _warn_cut,
    run_identity,
    schedule_tiles,
)
from hvx.tiling.plan import TilePlan, plan_tiles
from hvx.tiling.resume import RunFolder
from hvx.tiling.stages import stream_tiles
from hvx.tiling.stitch import Stitcher

__all__ = ["infer_slide"]

log = logging.getLogger("hvx.tiling")

_FORMATS = ("geojson", "csv")


def infer_slide(
    engine,
    reader,
    out_dir: str | Path,
    *,
    config: TilingConfig | None = None,
    formats: Sequence[str] = ("geojson", "csv"),
    labels: bool = False,
    stem: str = "nuclei",
    overwrite: bool = False,
    progress: bool = True,
    on_region: Callable[[int], None] | None = None,
    tiles_from: Callable[[list[int]], Iterable[tuple[int, np.ndarray, object]]] | None = None,
) -> dict:
    """Tiled inference of a slide or large image, streamed to files, resumable.

    Writes into ``out_dir``: ``<stem>.geojson`` (QuPath detections), ``<stem>.csv``
    (one row per nucleus), optionally ``<stem>_labels.tif`` (tiled int32 instance
    ids), plus ``run.json``, ``progress.jsonl``, ``state/`` and ``summary.json``.
    A final file appears only when complete. Re-running the same command after a
    crash continues after the last completed region and produces the same files
    as an uninterrupted run.

    Args:
        engine: An :class:`hvx.Engine` (or anything with ``infer`` and class names).
        reader: A reader from :mod:`hvx.slide` at the model's resolution.
        out_dir: Output folder.
        config: Tiling parameters (default :class:`TilingConfig`).
        formats: Any of ``"geojson"``, ``"csv"``.
        labels: Also write the label TIFF.
        stem: Base name of the output files.
        overwrite: Replace a different run's outputs in ``out_dir`` instead of refusing.
        progress: Show a progress bar (tiles/s, ETA) on stderr.
        on_region: Called with each region index once its record is on disk.
        tiles_from: Where tile results come from instead of running ``engine``:
            called once with the raster indices still to stitch (ascending), it
            yields ``(index, inst ndarray[T, T] int32, table)`` for each, in that
            order (:mod:`hvx.distributed` replays tiles computed elsewhere). The
            engine then only supplies the class names and model identity.

    Returns:
        The summary (also in ``summary.json``): nuclei, per-class counts, tiles,
        seconds, tiles/s, peak RSS, stitcher decisions, output files.

    Raises:
        hvx.tiling.resume.RunMismatchError: ``out_dir`` holds a different run.
        ValueError: For unknown formats or bad parameters.
    """
    import resource

    config = config or TilingConfig()
    bad = [f for f in formats if f not in _FORMATS]
    if bad:
        raise ValueError(f"expected formats from {list(_FORMATS)}, got {bad}")
    t_start = time.perf_counter()
    names, colors, _ = _engine_meta(engine)
    plan = plan_tiles(
        reader.height,
        reader.width,
        config.tile,
        config.overlap,
        rows_per_region=config.rows_per_region,
        align=_align(engine, config),
    )
    out = Path(out_dir)
    files = _output_names(stem)
    identity = run_identity(engine, reader, config, formats, labels, stem)
    run = RunFolder.open(out, identity, tuple(files.values()), overwrite=overwrite)
    done = run.summary()
    if done is not None:
        run.release()
        log.info("%s already holds this finished run; nothing to do", out)
        return done

    tiles = schedule_tiles(plan, reader, config)
    job = _SlideRun(run, plan, tiles, config, t_start, on_region)
    job.open_writers(out, files, [*formats, *(["masks"] if labels else [])], names, colors)
    todo = [i for i in tiles if i > job.stitcher.last_tile]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    bar = _progress(len(todo), len(tiles) - len(todo), progress)
    try:
        if tiles_from is not None:
            source = tiles_from(todo)
        else:
            source = stream_tiles(engine, reader, plan, todo, config)
        job.stitch(source, bar)
        bar.close()
        outputs = job.finish_outputs(out / files["labels"])
    except BaseException:
        run.release()  # the part files stay for a resume; another run may take over
        raise
    finally:
        bar.close()
        for w in job.writers.values():
            w.close()
    seconds = job.prior_s + time.perf_counter() - t_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _warn_cut(job.stitcher.stats, config)
    summary = _summary(plan, reader, tiles, job, names, seconds, peak, rss0, outputs)
    run.write_summary(summary)
    (out / files["masks"]).unlink(missing_ok=True)  # only needed until the TIFF is written
    run.release()
    return summary


def _summary(plan, reader, tiles, job, names, seconds, peak, rss0, outputs) -> dict:
    """The run's ``summary.json`` (see :func:`infer_slide`)."""
    return {
        "image": [plan.height, plan.width],
        "mpp": getattr(reader, "mpp", None),
        "tiles": len(plan),
        "tiles_run": len(tiles),
        "tiles_background": len(plan) - len(tiles),
        "nuclei": job.stitcher.next_id - 1,
        "per_class": _per_class(job.counts, names),
        "seconds": round(seconds, 3),
        "tiles_per_s": round(len(tiles) / seconds, 2) if seconds > 0 else None,
        "peak_rss_mb": round(peak, 1),
        "rss_before_run_mb": round(rss0, 1),
        "stitch": job.stitcher.stats.to_dict(),
        "outputs": outputs,
        "resumed": job.resumed,
    }


def _output_names(stem: str) -> dict[str, str]:
    """Output kind -> file name in the run folder (``masks``: temporary, for the TIFF)."""
    return {
        "geojson": f"{stem}.geojson",
        "csv": f"{stem}.csv",
        "masks": f"{stem}_masks.bin",
        "labels": f"{stem}_labels.tif",
    }


def _per_class(counts: dict[int, int], names: Sequence[str]) -> dict[str, int]:
    """Nuclei per class name (0: ``unclassified``; ids beyond the names: ``type_<id>``)."""
    return {
        (names[t - 1] if 0 < t <= len(names) else ("unclassified" if t == 0 else f"type_{t}")): c
        for t, c in sorted(counts.items())
    }


class _SlideRun:
    """One run's moving parts: stitcher, writers, per-class counts, region records.

    Started fresh, or from the last completed region recorded in ``run``.
    """

    def __init__(
        self,
        run: RunFolder,
        plan: TilePlan,
        tiles: list[int],
        config: TilingConfig,
        t_start: float,
        on_region: Callable[[int], None] | None,
    ) -> None:
        self.run, self.plan, self.t_start, self.on_region = run, plan, t_start, on_region
        records = run.records()
        self.resumed = bool(records)
        if records:
            last = records[-1]
            run.keep_records(records)
            self.stitcher = Stitcher.from_state(plan, run.load_state(last))
            self.sizes = last["sizes"]
            self.counts = {int(k): v for k, v in last["counts"].items()}
            self.region, self.prior_s = last["region"] + 1, float(last["seconds"])
            log.info("resuming %s after region %d of %d", run.path, last["region"], plan.n_regions)
        else:
            self.stitcher = Stitcher(plan, tiles, match_fraction=config.match_fraction)
            self.sizes, self.counts, self.region, self.prior_s = {}, {}, 0, 0.0
        self.writers: dict = {}

    def open_writers(
        self, out: Path, files: dict[str, str], wanted: Sequence[str], names, colors
    ) -> None:
        """Opens (or, resuming, cuts back and reopens) the streamed writers wanted."""
        sizes = self.sizes
        if "geojson" in wanted:
            self.writers["geojson"] = GeoJSONStream(
                out / files["geojson"], names, colors, resume_size=sizes.get("geojson")
            )
        if "csv" in wanted:
            self.writers["csv"] = CSVStream(out / files["csv"], names, resume_size=sizes.get("csv"))
        if "masks" in wanted:
            self.writers["masks"] = MaskStream(out / files["masks"], resume_size=sizes.get("masks"))

    def stitch(self, source: Iterable[tuple[int, np.ndarray, object]], bar) -> None:
        """Stitches every tile of ``source``, completing each region as the rows pass."""
        plan, stitcher = self.plan, self.stitcher
        for i, tile_inst, table in source:
            row_region = plan.region_of_row(i // plan.n_cols)
            while self.region < row_region:
                self.complete(self.region)
                self.region += 1
            self.emit(stitcher.add_tile(i, tile_inst, table))
            bar.update(1)
            bar.set_postfix(nuclei=stitcher.next_id - 1, refresh=False)
        while self.region < plan.n_regions:
            self.complete(self.region)
            self.region += 1
        self.emit(stitcher.finish())

    def emit(self, nu: Nuclei) -> None:
        """Counts the nuclei per class and hands them to the writers."""
        for t, c in zip(*np.unique(nu.type, return_counts=True), strict=True):
            self.counts[int(t)] = self.counts.get(int(t), 0) + int(c)
        for key in _FORMATS:
            if key in self.writers:
                self.writers[key].add(nu)
        if "masks" in self.writers:
            self.writers["masks"].add(nu, self.stitcher.low_water())

    def complete(self, r: int) -> None:
        """Checkpoints the writers and records region ``r`` with the stitcher state."""
        record = {
            "region": r,
            "last_tile": self.stitcher.last_tile,
            "nuclei": self.stitcher.next_id - 1,
            "counts": {str(k): v for k, v in sorted(self.counts.items())},
            "sizes": {k: w.checkpoint() for k, w in self.writers.items()},
            "seconds": round(self.prior_s + time.perf_counter() - self.t_start, 3),
        }
        self.run.complete(record, self.stitcher.state())
        if self.on_region is not None:
            self.on_region(r)

    def finish_outputs(self, labels_path: Path) -> list[str]:
        """Completes the files (the label TIFF from the mask stream); their paths."""
        outputs = []
        for key in _FORMATS:
            if key in self.writers:
                outputs.append(str(self.writers.pop(key).finish()))
        if "masks" in self.writers:
            masks_path = self.writers.pop("masks").finish()
            tiff = write_label_tiff(masks_path, labels_path, self.plan.height, self.plan.width)
            outputs.append(str(tiff))
        return outputs


def _progress(total: int, initial_done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="tile",
        desc="hvx tiles" + (f" (resumed, {initial_done} done)" if initial_done else ""),
        disable=None if enabled else True,  # None: off when stderr is not a terminal
        dynamic_ncols=True,
        mininterval=0.5,
    )
