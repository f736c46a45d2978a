"""Tiled inference: reader -> batches through the engine -> stitcher -> writers.

Three stages run at once: a reader thread cuts tiles (bounded queue of
``queue_tiles`` tiles), an engine thread runs them in batches of ``batch_size``
(bounded queue of ``queue_batches`` results; the engine releases the GIL in
torch / ONNX Runtime / the native post-processing), and the calling thread
stitches the nuclei and streams them to disk. Host memory is therefore bounded
by the queue sizes, the batch, and one tile row of stitcher state -- not by the
image size.

- :func:`infer_image`: an in-memory image -> global instance map, type map, nuclei.
- :func:`infer_slide`: any reader (:mod:`hvx.slide`) -> files in an output folder,
  resumable (:mod:`hvx.tiling.resume`), with progress and a summary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from hvx.io.streams import CSVStream, GeoJSONStream, MaskStream, write_label_tiff
from hvx.tiling.plan import TilePlan, plan_tiles
from hvx.tiling.resume import RunFolder
from hvx.tiling.stitch import Nuclei, Stitcher, StitchStats

__all__ = [
    "TiledResult",
    "TilingConfig",
    "infer_image",
    "infer_slide",
    "run_identity",
    "schedule_tiles",
]

log = logging.getLogger("hvx.tiling")

_END = object()


@dataclasses.dataclass(frozen=True)
class TilingConfig:
    """How a large image is tiled and streamed.

    Attributes:
        tile: Tile size in pixels (the network's input; 256 = the training tiles).
        overlap: Overlap of neighbouring tiles, even, <= tile // 2. Must exceed the
            largest nucleus diameter in pixels at the working resolution (about
            30 px at 0.5 mpp, 60-110 px at 0.25 mpp); nuclei larger than that can
            come out cut (counted as ``cut_emitted`` and warned about).
        batch_size: Tiles per engine call.
        rows_per_region: Tile rows per resumable region (one completion record each).
        queue_tiles: Tiles buffered between the reader and the engine.
        queue_batches: Engine results buffered before the stitcher.
        tissue: Skip tiles without tissue (Otsu on a thumbnail, :func:`hvx.io.slides.tissue_mask`).
        thumbnail_side: Longer side of the thumbnail the tissue mask is computed on.
        match_fraction: Two tiles' views of a nucleus are one nucleus when they share
            this fraction of the smaller area.
        pad_value: Value of the padding added around images smaller than a tile.
    """

    tile: int = 256
    overlap: int = 64
    batch_size: int = 8
    rows_per_region: int = 1
    queue_tiles: int = 32
    queue_batches: int = 2
    tissue: bool = True
    thumbnail_side: int = 2048
    match_fraction: float = 0.5
    pad_value: int = 255

    def __post_init__(self) -> None:
        for name in ("batch_size", "rows_per_region", "queue_tiles", "queue_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"expected {name} >= 1, got {getattr(self, name)}")
        if not 0 <= self.pad_value <= 255:
            raise ValueError(f"expected pad_value in [0, 255], got {self.pad_value}")

    def to_dict(self) -> dict:
        """JSON-ready fields (the parameters a resumed run must share)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TiledResult:
    """Tiled inference of one in-memory image.

    Attributes:
        inst: ``ndarray[H, W] int32`` global instance ids (0 = background).
        type: ``ndarray[H, W] uint8`` class of each nucleus pixel.
        nuclei: :class:`hvx.tiling.Nuclei`, ascending ids (masks dropped).
        stats: What the stitcher decided.
        plan: The tile plan used.
    """

    inst: np.ndarray
    type: np.ndarray
    nuclei: Nuclei
    stats: StitchStats
    plan: TilePlan

    def table(self):
        """The nuclei as an :class:`hvx.results.NucleusTable` (ascending ids)."""
        from hvx.results import NucleusTable

        n = self.nuclei
        return NucleusTable(
            id=n.id,
            type=n.type,
            type_prob=n.type_prob,
            centroid=n.centroid,
            bbox=n.bbox,
            area=n.area,
            contours=n.contours,
        )


# ------------------------------------------------------------------ tiles
def schedule_tiles(plan: TilePlan, reader, config: TilingConfig) -> list[int]:
    """Raster indices of the tiles to run: all, or those with tissue in the thumbnail."""
    if not config.tissue:
        return list(range(len(plan)))
    from hvx.io.slides import tissue_mask

    thumb = reader.thumbnail(config.thumbnail_side)
    mask = tissue_mask(thumb)
    sy, sx = mask.shape[0] / plan.height, mask.shape[1] / plan.width
    keep = []
    for t in plan:
        r0, c0 = int(t.y0 * sy), int(t.x0 * sx)
        r1 = max(r0 + 1, int(np.ceil((t.y0 + plan.tile) * sy)))
        c1 = max(c0 + 1, int(np.ceil((t.x0 + plan.tile) * sx)))
        if mask[r0:r1, c0:c1].any():
            keep.append(t.index)
    return keep


def _align(engine, config: TilingConfig) -> int:
    """Tile-start alignment: the engine's CLAHE tile size when the stride allows it.

    With fixed-size CLAHE tiles (``PreprocessConfig.tile_size``) and tiles starting
    on multiples of that size, each tile's network input equals the whole image's
    away from the tile border, so tiled output matches one-pass output.
    """
    pre = getattr(engine, "preprocess_config", None)
    size = getattr(pre, "tile_size", None)
    if not size:
        return 1
    if (config.tile - config.overlap) % size:
        log.warning(
            "tile - overlap = %d is not a multiple of the model's CLAHE tile size %d: "
            "tiles will not share the whole image's CLAHE tiles, so tiled output can "
            "differ from one-pass output near seams",
            config.tile - config.overlap,
            size,
        )
        return 1
    return int(size)


def _read_tile(reader, plan: TilePlan, index: int, pad_value: int) -> np.ndarray:
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


def _stream(
    engine, reader, plan: TilePlan, tiles: Sequence[int], config: TilingConfig
) -> Iterator[tuple[int, np.ndarray, object]]:
    """Yields ``(tile index, inst ndarray[T, T], table)`` in order, stages overlapped."""
    q_tiles: queue.Queue = queue.Queue(maxsize=config.queue_tiles)
    q_out: queue.Queue = queue.Queue(maxsize=config.queue_batches)
    stop = threading.Event()

    def read_loop() -> None:
        try:
            for i in tiles:
                if not _put(q_tiles, (i, _read_tile(reader, plan, i, config.pad_value)), stop):
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


# ------------------------------------------------------------- in memory
def infer_image(
    engine,
    image: np.ndarray,
    *,
    tile: int = 256,
    overlap: int = 64,
    batch_size: int = 8,
    tissue: bool = False,
    config: TilingConfig | None = None,
) -> TiledResult:
    """Tiled inference of an in-memory image of any size.

    Args:
        engine: Anything with ``infer(ndarray[N, T, T, 3] uint8) -> BatchResult``
            (an :class:`hvx.Engine`).
        image: ``ndarray[H, W, 3] uint8`` RGB, at the model's resolution.
        tile: Tile size.
        overlap: Tile overlap (see :class:`TilingConfig`).
        batch_size: Tiles per engine call.
        tissue: Skip background tiles (off by default for in-memory images).
        config: Full configuration; overrides ``tile``/``overlap``/``batch_size``/``tissue``.

    Returns:
        :class:`TiledResult`: each nucleus once, whole, ids 1..K in raster order of
        the tiles that kept them.

    Raises:
        ValueError: For a bad image or tiling parameters.
    """
    from hvx.io.slides import ArrayReader

    if config is None:
        config = TilingConfig(tile=tile, overlap=overlap, batch_size=batch_size, tissue=tissue)
    reader = ArrayReader(image)
    plan = plan_tiles(
        reader.height, reader.width, config.tile, config.overlap, align=_align(engine, config)
    )
    tiles = schedule_tiles(plan, reader, config)
    stitcher = Stitcher(plan, tiles, match_fraction=config.match_fraction)
    inst = np.zeros((plan.height, plan.width), np.int32)
    typ = np.zeros((plan.height, plan.width), np.uint8)
    parts: list[Nuclei] = []

    def paint(nu: Nuclei) -> None:
        for k in range(len(nu)):
            r0, c0, r1, c1 = nu.bbox[k]
            m = nu.masks[k] & (inst[r0:r1, c0:c1] == 0)
            inst[r0:r1, c0:c1][m] = nu.id[k]
            typ[r0:r1, c0:c1][m] = nu.type[k]
        nu.masks = []
        parts.append(nu)

    for i, tile_inst, table in _stream(engine, reader, plan, tiles, config):
        paint(stitcher.add_tile(i, tile_inst, table))
    paint(stitcher.finish())
    _warn_cut(stitcher.stats, config)
    return TiledResult(inst, typ, _concat(parts), stitcher.stats, plan)


def _concat(parts: Sequence[Nuclei]) -> Nuclei:
    parts = [p for p in parts if len(p)] or [Nuclei.empty()]
    return Nuclei(
        id=np.concatenate([p.id for p in parts]),
        type=np.concatenate([p.type for p in parts]),
        type_prob=np.concatenate([p.type_prob for p in parts]),
        centroid=np.concatenate([p.centroid for p in parts]),
        bbox=np.concatenate([p.bbox for p in parts]),
        area=np.concatenate([p.area for p in parts]),
        contours=[c for p in parts for c in p.contours],
        masks=[],
        cut=np.concatenate([p.cut for p in parts]),
        tile=np.concatenate([p.tile for p in parts]),
    )


def _warn_cut(stats: StitchStats, config: TilingConfig) -> None:
    if not stats.cut_emitted:
        return
    size = stats.cut_max_extent
    if size >= config.overlap:
        log.warning(
            "%d nuclei were kept cut (no tile saw them whole); the largest spans %d px, "
            "at least the tile overlap (%d px): raise --overlap above the largest nucleus",
            stats.cut_emitted,
            size,
            config.overlap,
        )
    else:
        log.warning(
            "%d nuclei were kept cut (no tile saw them whole), all smaller than the tile "
            "overlap (largest %d px, overlap %d px): neighbouring tiles segmented them "
            "differently at the seam (a larger --tile gives the network more context)",
            stats.cut_emitted,
            size,
            config.overlap,
        )


# ---------------------------------------------------------------- to disk
def engine_mpp(engine) -> float | None:
    """Microns per pixel the engine's model was trained at (None when it does not say)."""
    for attr in ("model_mpp", "mpp"):
        v = getattr(engine, attr, None)
        if isinstance(v, int | float) and v > 0:
            return float(v)
    return None


def _engine_meta(engine) -> tuple[tuple[str, ...], object, dict]:
    """Class names, class colours and a model identity (for the run hash)."""
    bundle = getattr(engine, "bundle", None)
    names = getattr(engine, "class_names", None) or getattr(bundle, "class_names", ())
    colors = getattr(engine, "class_colors", None) or getattr(bundle, "class_colors", None)
    ident: dict = {"class_names": list(names), "mpp": engine_mpp(engine)}
    path = getattr(bundle, "path", None) or getattr(engine, "source", None)
    if path is not None:
        h = hashlib.sha256()
        p = Path(path)
        for f in sorted(p.iterdir()) if p.is_dir() else [p]:
            if f.is_file() and f.suffix in (".json", ".safetensors", ".onnx", ".plan"):
                h.update(f.name.encode())
                with open(f, "rb") as fh:
                    for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                        h.update(chunk)
        ident["files_sha256"] = h.hexdigest()
    for attr in ("variant", "backend", "precision"):
        v = getattr(engine, attr, None) or getattr(bundle, attr, None)
        if isinstance(v, str | int | float):
            ident[attr] = v
    return tuple(str(n) for n in names), colors, ident


def run_identity(
    engine,
    reader,
    config: TilingConfig,
    formats: Sequence[str] = ("geojson", "csv"),
    labels: bool = False,
    stem: str = "nuclei",
) -> dict:
    """What a run folder of :func:`infer_slide` records and a resumed run must match.

    Returns:
        JSON-ready ``{"hvx", "input", "model", "params"}``: hvx version, the
        reader's identity, the model's identity and every parameter that affects
        the outputs (hashed by :func:`hvx.tiling.resume.run_hash`).
    """
    from hvx._version import __version__

    _, _, model_id = _engine_meta(engine)
    return {
        "hvx": __version__,
        "input": reader.identity(),
        "model": model_id,
        "params": {**config.to_dict(), "formats": sorted(formats), "labels": labels, "stem": stem},
    }


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
    bad = [f for f in formats if f not in ("geojson", "csv")]
    if bad:
        raise ValueError(f"expected formats from ['geojson', 'csv'], got {bad}")
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
    files = {
        "geojson": f"{stem}.geojson",
        "csv": f"{stem}.csv",
        "masks": f"{stem}_masks.bin",
        "labels": f"{stem}_labels.tif",
    }
    wanted = [*formats, *(["masks"] if labels else [])]
    identity = run_identity(engine, reader, config, formats, labels, stem)
    run = RunFolder.open(out, identity, tuple(files.values()), overwrite=overwrite)
    done = run.summary()
    if done is not None:
        run.release()
        log.info("%s already holds this finished run; nothing to do", out)
        return done

    tiles = schedule_tiles(plan, reader, config)
    records = run.records()
    if records:
        last = records[-1]
        run.keep_records(records)
        stitcher = Stitcher.from_state(plan, run.load_state(last))
        sizes, counts = last["sizes"], {int(k): v for k, v in last["counts"].items()}
        region, prior_s = last["region"] + 1, float(last["seconds"])
        log.info("resuming %s after region %d of %d", out, last["region"], plan.n_regions)
    else:
        stitcher = Stitcher(plan, tiles, match_fraction=config.match_fraction)
        sizes, counts, region, prior_s = {}, {}, 0, 0.0
    writers: dict = {}
    if "geojson" in wanted:
        writers["geojson"] = GeoJSONStream(
            out / files["geojson"], names, colors, resume_size=sizes.get("geojson")
        )
    if "csv" in wanted:
        writers["csv"] = CSVStream(out / files["csv"], names, resume_size=sizes.get("csv"))
    if "masks" in wanted:
        writers["masks"] = MaskStream(out / files["masks"], resume_size=sizes.get("masks"))
    todo = [i for i in tiles if i > stitcher.last_tile]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def emit(nu: Nuclei) -> None:
        for t, c in zip(*np.unique(nu.type, return_counts=True), strict=True):
            counts[int(t)] = counts.get(int(t), 0) + int(c)
        for key in ("geojson", "csv"):
            if key in writers:
                writers[key].add(nu)
        if "masks" in writers:
            writers["masks"].add(nu, stitcher.low_water())

    def complete(r: int) -> None:
        sizes = {k: w.checkpoint() for k, w in writers.items()}
        record = {
            "region": r,
            "last_tile": stitcher.last_tile,
            "nuclei": stitcher.next_id - 1,
            "counts": {str(k): v for k, v in sorted(counts.items())},
            "sizes": sizes,
            "seconds": round(prior_s + time.perf_counter() - t_start, 3),
        }
        run.complete(record, stitcher.state())
        if on_region is not None:
            on_region(r)

    bar = _progress(len(todo), len(tiles) - len(todo), progress)
    try:
        if tiles_from is not None:
            source = tiles_from(todo)
        else:
            source = _stream(engine, reader, plan, todo, config)
        for i, tile_inst, table in source:
            row_region = plan.region_of_row(i // plan.n_cols)
            while region < row_region:
                complete(region)
                region += 1
            emit(stitcher.add_tile(i, tile_inst, table))
            bar.update(1)
            bar.set_postfix(nuclei=stitcher.next_id - 1, refresh=False)
        while region < plan.n_regions:
            complete(region)
            region += 1
        emit(stitcher.finish())
        bar.close()
        outputs = []
        for key in ("geojson", "csv"):
            if key in writers:
                outputs.append(str(writers.pop(key).finish()))
        if "masks" in writers:
            masks_path = writers.pop("masks").finish()
            outputs.append(
                str(write_label_tiff(masks_path, out / files["labels"], plan.height, plan.width))
            )
    except BaseException:
        run.release()  # the part files stay for a resume; another run may take over
        raise
    finally:
        bar.close()
        for w in writers.values():
            w.close()
    seconds = prior_s + time.perf_counter() - t_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _warn_cut(stitcher.stats, config)
    summary = {
        "image": [plan.height, plan.width],
        "mpp": getattr(reader, "mpp", None),
        "tiles": len(plan),
        "tiles_run": len(tiles),
        "tiles_background": len(plan) - len(tiles),
        "nuclei": stitcher.next_id - 1,
        "per_class": {
            (
                names[t - 1] if 0 < t <= len(names) else ("unclassified" if t == 0 else f"type_{t}")
            ): c
            for t, c in sorted(counts.items())
        },
        "seconds": round(seconds, 3),
        "tiles_per_s": round(len(tiles) / seconds, 2) if seconds > 0 else None,
        "peak_rss_mb": round(peak, 1),
        "rss_before_run_mb": round(rss0, 1),
        "stitch": stitcher.stats.to_dict(),
        "outputs": outputs,
        "resumed": bool(records),
    }
    run.write_summary(summary)
    (out / files["masks"]).unlink(missing_ok=True)  # only needed until the TIFF is written
    run.release()
    return summary


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
