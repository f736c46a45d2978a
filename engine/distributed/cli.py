"""``hvx slide SLIDE... --out DIR --ray [ADDRESS]``: the command-line side of run_slides."""

from __future__ import annotations

import argparse
import logging

from hvx.io.slides import SlideReadError
from hvx.stain import normalizer_from_options
from hvx.tiling import RunMismatchError, TilingConfig

log = logging.getLogger("hvx")


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    """Adds ``--ray [ADDRESS]``, ``--workers`` and ``--region`` to ``hvx slide``."""
    g = p.add_argument_group("cohorts on Ray (pip install 'hvx[ray]')")
    g.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: alone, a local Ray on this machine; with an address "
        "(auto, host:port), join that cluster. Regions of every slide run in parallel; "
        "outputs equal the single-process ones",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=None,
        help="engine actors (default: one per GPU of the cluster, else one per two CPUs)",
    )
    g.add_argument(
        "--region",
        type=int,
        default=4096,
        help="region side in pixels, the unit of work and of resumption (default 4096)",
    )
    g.add_argument(
        "--assemble",
        choices=("driver", "cluster"),
        default="driver",
        help="where each slide is stitched and written: in the driver (default) or as one "
        "Ray task per slide, in parallel (--out must be on storage all nodes share)",
    )


def run_ray(args: argparse.Namespace) -> int:
    """Runs ``hvx slide --ray``; prints the per-slide table. Returns the exit code."""
    try:
        from hvx.distributed import format_table, run_slides

        config = TilingConfig(
            tile=args.tile,
            overlap=args.overlap,
            batch_size=args.tile_batch,
            tissue=not args.no_tissue,
        )
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"expected --workers >= 1, got {args.workers}")
        if args.region < args.tile:
            raise ValueError(f"expected --region >= --tile ({args.tile}), got {args.region}")
        result = run_slides(
            args.inputs,
            args.out,
            model=args.model,
            address=None if args.ray == "local" else args.ray,
            workers=args.workers,
            config=config,
            region_px=args.region,
            labels=args.labels,
            level=args.level,
            mpp=args.mpp,
            device=args.device or "auto",
            overwrite=args.overwrite,
            progress=not args.no_progress,
            assemble_on=args.assemble,
            stain=normalizer_from_options(args.stain_norm, args.stain_target),
        )
    except (SlideReadError, RunMismatchError, FileNotFoundError, ImportError, ValueError) as err:
        log.error("%s", err)
        return 2
    except RuntimeError as err:
        log.error("%s", err)
        return 1
    print(format_table(result))
    return 0
