"""Cohorts of slides on a Ray cluster: region-parallel, resumable, equal to one machine.

``run_slides(slides, out, ...)`` (and ``hvx slide SLIDE... --out DIR --ray
[ADDRESS]``) cuts every slide into regions of the single-process tile grid,
runs the network in Ray actors holding one engine each, post-processes chunks
of tiles in Ray CPU tasks, commits each region's tile results atomically to the
slide's run folder and, per slide, stitches them with the single-process
stitcher and writers (see docs/distributed.md). Needs ``pip install 'hvx[ray]'``;
importing this package does not import Ray.
"""

from hvx.distributed.cohort import format_table, output_folders, run_slides
from hvx.distributed.regions import Region, RegionStore, pack_tiles, plan_regions, unpack_tiles

__all__ = [
    "Region",
    "RegionStore",
    "format_table",
    "output_folders",
    "pack_tiles",
    "plan_regions",
    "run_slides",
    "unpack_tiles",
]
