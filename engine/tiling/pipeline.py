"""Tiled inference of large images: tiling parameters, the in-memory path, run identity.

Tiles go through the overlapped stages of :mod:`hvx.tiling.stages` (reader
thread, engine thread, caller) into the :class:`hvx.tiling.stitch.Stitcher`.
Host memory is bounded by the queue sizes, the batch, and one tile row of
stitcher state -- not by the image size.

- :func:`infer_image`: an in-memory image -> global instance map, type map, nuclei.
- :func:`hvx.tiling.slide_run.infer_slide`: any reader (:mod:`hvx.slide`) -> files
  in an output folder, resumable, with progress and a summary; it shares
  :class:`TilingConfig`, :func:`schedule_tiles` and :func:`run_identity` from here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hvx._version import __version__
from hvx.io.slides import ArrayReader, tissue_mask
from hvx.results import Nuclei
from hvx.tiling.plan import TilePlan, plan_tiles
from hvx.tiling.stages import stream_tiles
from hvx.tiling.stitch import Stitcher, StitchStats

__all__ = [
    "TiledResult",
    "TilingConfig",
    "engine_mpp",
    "infer_image",
    "run_identity",
    "schedule_tiles",
]

log = logging.getLogger("hvx.tiling")


@dataclasses.dataclass(frozen=True)
class TilingConfig:
    """How a large image is tiled and streamed.

    Attributes:
        tile: Tile size in pixels (the network's input). 512 agrees with a one-pass run
            best per network pixel (measured: docs/tiling.md, "Tile geometry").
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

    tile: int = 512
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
        nuclei: :class:`hvx.results.Nuclei` (a ``NucleusTable`` plus ``cut`` and
            ``tile``), ascending ids, masks dropped.
        stats: What the stitcher decided.
        plan: The tile plan used.
    """

    inst: np.ndarray
    type: np.ndarray
    nuclei: Nuclei
    stats: StitchStats
    plan: TilePlan


# ------------------------------------------------------------------ tiles
def schedule_tiles(plan: TilePlan, reader, config: TilingConfig) -> list[int]:
    """Raster indices of the tiles to run: all, or those with tissue in the thumbnail."""
    if not config.tissue:
        return list(range(len(plan)))

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


# ------------------------------------------------------------- in memory
def infer_image(
    engine,
    image: np.ndarray,
    *,
    tile: int = 512,
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

    for i, tile_inst, table in stream_tiles(engine, reader, plan, tiles, config):
        paint(stitcher.add_tile(i, tile_inst, table))
    paint(stitcher.finish())
    _warn_cut(stitcher.stats, config)
    return TiledResult(inst, typ, Nuclei.concat(parts), stitcher.stats, plan)


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
    _, _, model_id = _engine_meta(engine)
    return {
        "hvx": __version__,
        "input": reader.identity(),
        "model": model_id,
        "params": {**config.to_dict(), "formats": sorted(formats), "labels": labels, "stem": stem},
    }
