"""``hvx slide``: whole slides and large images through the tiled, resumable path.

``hvx infer`` hands large inputs here too: :func:`is_large_input` says which,
:func:`add_tiling_arguments` adds the tiling options to a parser and
:func:`run_tiled` runs one input with an already loaded engine.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from hvx.cli._checks import int_at_least, mpp_arg, positive_float
from hvx.distributed.cli import add_ray_arguments
from hvx.io.slides import SLIDE_SUFFIXES, SlideReadError, open_image
from hvx.stain import METHODS, NormalizedReader, StainNormalizer, normalizer_from_options
from hvx.tiling import RunMismatchError, TilingConfig, infer_slide
from hvx.tiling.budget import check_tiled_memory
from hvx.tiling.pipeline import engine_mpp

log = logging.getLogger("hvx")

#: Plain images with more pixels than this go through the tiled path.
LARGE_PIXELS = 4096 * 4096


def is_large_input(path: str | os.PathLike, max_pixels: int = LARGE_PIXELS) -> bool:
    """True for slide formats and for plain images larger than ``max_pixels``.

    Reads only the file header (Pillow / tifffile), never the pixels.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return True
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(p) as tif:
                shape = tif.pages.first.shape
                if len(tif.pages) > 1 and tif.pages[1].is_tiled:
                    return True  # pyramidal
            return int(shape[0]) * int(shape[1]) > max_pixels
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None  # header only; no decompression bomb risk here
        with Image.open(p) as im:
            w, h = im.size
        return w * h > max_pixels
    except Exception:  # unreadable headers are reported by the reader that opens them
        return False


def add_tiling_arguments(p: argparse.ArgumentParser, *, common: bool = True) -> None:
    """Adds the options of the tiled path (shared by ``hvx slide`` and ``hvx infer``).

    Args:
        p: The parser.
        common: Also add ``--tile-batch``, ``--overwrite`` and ``--no-progress``
            (``hvx infer`` has its own ``--batch-size``, ``--overwrite``, ``--no-progress``).
    """
    g = p.add_argument_group("large images and slides")
    g.add_argument(
        "--level", type=int_at_least(0), default=None, help="slide pyramid level to read"
    )
    g.add_argument(
        "--mpp",
        type=mpp_arg,
        default=None,
        help="microns per pixel of the input (level 0): needed for slides without that "
        "metadata; for plain tiles at another resolution than the model's, hvx infer "
        "rescales them to the model and the results back",
    )
    g.add_argument(
        "--tile", type=int_at_least(16), default=512, help="tile size in pixels (default 512)"
    )
    g.add_argument(
        "--overlap",
        type=int_at_least(0),
        default=64,
        help="tile overlap in pixels; must exceed the largest nucleus (default 64)",
    )
    g.add_argument("--no-tissue", action="store_true", help="run background tiles too")
    g.add_argument("--labels", action="store_true", help="also write a tiled label TIFF")
    g.add_argument(
        "--max-memory-gb",
        type=positive_float,
        default=None,
        help="refuse a run whose memory estimate exceeds this (default: 80%% of RAM)",
    )
    if common:
        g.add_argument(
            "--tile-batch", type=int_at_least(1), default=8, help="tiles per engine call"
        )
        g.add_argument(
            "--overwrite",
            action="store_true",
            help="replace the outputs of a different run in --out (never done silently)",
        )
        g.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_stain_arguments(p: argparse.ArgumentParser) -> None:
    """Adds ``--stain-norm`` and ``--stain-target`` (shared by ``hvx slide`` and ``hvx infer``)."""
    g = p.add_argument_group("stain normalisation (off by default)")
    g.add_argument(
        "--stain-norm",
        choices=METHODS,
        default=None,
        help="map each input's colours to a target before inference: reinhard (L*a*b* "
        "mean/std) or macenko (H&E stain vectors); fitted per image, or once per slide "
        "on its tissue (default: off)",
    )
    g.add_argument(
        "--stain-target",
        type=Path,
        default=None,
        metavar="IMAGE_OR_FOLDER",
        help="take the target colours from this H&E image, or from the images of this "
        "folder (the median of their fits) (default: CoNSeP's training images, the "
        "colours the default model first learnt)",
    )


def stain_normalizer(args: argparse.Namespace) -> StainNormalizer | None:
    """The normaliser ``--stain-norm`` / ``--stain-target`` ask for, or None.

    Raises:
        ValueError: See :func:`hvx.stain.normalizer_from_options`.
    """
    return normalizer_from_options(
        getattr(args, "stain_norm", None), getattr(args, "stain_target", None)
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``hvx slide``."""
    p = sub.add_parser(
        "slide",
        help="segment a whole slide or a large image, tiled, streamed to disk, resumable",
        description="Tiled inference of whole slides (.svs/.tif/.ndpi/.mrxs via OpenSlide) "
        "and large PNG/JPEG/TIFF images: overlapping tiles, each nucleus kept once, "
        "QuPath GeoJSON + CSV (+ label TIFF) written as it goes. Re-running the same "
        "command after an interruption resumes where it stopped.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="SLIDE",
        help="slide or image files (several: one sub-folder of --out per slide)",
    )
    p.add_argument(
        "--model",
        default=None,
        type=Path,
        help="model bundle folder (default: the bundled default model)",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: best available)")
    add_tiling_arguments(p)
    add_stain_arguments(p)
    add_ray_arguments(p)
    p.set_defaults(func=run)


def run_tiled(
    args: argparse.Namespace,
    engine,
    path: Path,
    out: Path,
    *,
    formats: tuple[str, ...] = ("geojson", "csv"),
    stem: str = "nuclei",
) -> dict:
    """Runs one large input with a loaded engine; prints and returns the summary.

    Raises:
        hvx.io.slides.SlideReadError: Unreadable input, bad level, missing mpp.
        hvx.tiling.RunMismatchError: ``out`` holds a different run.
    """
    import json

    batch = getattr(args, "tile_batch", None) or args.batch_size
    check_tiled_memory(args.tile, batch, 32, limit_gb=getattr(args, "max_memory_gb", None))
    target = None if args.level is not None else engine_mpp(engine)
    reader = open_image(path, level=args.level, target_mpp=target, mpp=args.mpp)
    stain = getattr(args, "stain", None)
    if stain is not None:
        try:
            reader = NormalizedReader(reader, stain)
        except BaseException:
            reader.close()
            raise
    if target is None and args.level is None:
        log.warning("the engine states no model mpp: reading %s at its own resolution", path)
    config = TilingConfig(
        tile=args.tile,
        overlap=args.overlap,
        batch_size=getattr(args, "tile_batch", None) or args.batch_size,
        tissue=not args.no_tissue,
    )
    with reader:
        summary = infer_slide(
            engine,
            reader,
            out,
            config=config,
            formats=formats,
            stem=stem,
            labels=args.labels,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    lines = [
        f"{path.name}: {summary['nuclei']} nuclei in {summary['seconds']:.1f} s "
        f"({summary['tiles_run']} tiles, {summary['tiles_per_s']} tiles/s, "
        f"{summary['tiles_background']} background tiles skipped), "
        f"peak memory {summary['peak_rss_mb']:.0f} MiB",
        "  per class: " + json.dumps(summary["per_class"]),
    ]
    for line in lines:
        print(line)
    return summary


def run(args: argparse.Namespace) -> int:
    """``hvx slide``: loads the engine, runs the tiled path."""
    try:
        from hvx import Engine  # provided by the engine module
    except ImportError as e:
        raise SystemExit(f"hvx slide needs hvx.Engine, which this install lacks: {e}") from e

    if args.ray is not None:  # a cohort on Ray (hvx.distributed)
        from hvx.distributed.cli import run_ray

        return run_ray(args)
    try:
        args.stain = stain_normalizer(args)
        from hvx.distributed.cohort import output_folders

        pairs = output_folders(args.inputs, args.out)  # one slide: --out; several: --out/<stem>/
        engine = Engine.load(args.model, device=args.device or "auto")
        for path, out in pairs:
            run_tiled(args, engine, path, out)
    except (SlideReadError, RunMismatchError, FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 2
    return 0


def run_large_inputs(args: argparse.Namespace, engine, large: list[Path], out: Path) -> list:
    """``hvx infer``'s hook: each large input -> its own run folder ``out/<stem>/``.

    Output formats follow ``--format``: geojson and csv as asked; npy/conic ask for
    the label TIFF instead (a whole-slide array is not written); overlay is skipped.

    Returns:
        ``(path, error message)`` for each input that failed.
    """
    formats = tuple(f for f in args.format if f in ("geojson", "csv"))
    if any(f in ("npy", "conic") for f in args.format):
        args.labels = True
    failed = []
    for path in large:
        try:
            run_tiled(args, engine, path, out / path.stem, formats=formats, stem=path.stem)
        except Exception as err:
            msg = " ".join(str(err).split()) or type(err).__name__
            failed.append((path, msg))
            log.error("failed %s: %s", path, msg)
    return failed
