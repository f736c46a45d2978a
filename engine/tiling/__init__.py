"""Large images and whole slides: tiles, seams, streaming outputs, resumable runs.

- :mod:`hvx.tiling.plan`: overlapping tiles and their centre regions.
- :mod:`hvx.tiling.stitch`: each nucleus kept exactly once, whole, ids streamed.
- streamed GeoJSON / CSV / label TIFF writers: :mod:`hvx.io.streams`.
- :mod:`hvx.tiling.resume`: run identity, per-region completion records.
- :mod:`hvx.tiling.pipeline`: :func:`infer_image` and :func:`infer_slide`.
"""

from hvx.tiling.pipeline import TiledResult, TilingConfig, infer_image, infer_slide
from hvx.tiling.plan import Tile, TilePlan, plan_tiles
from hvx.tiling.resume import RunMismatchError
from hvx.tiling.stitch import Nuclei, Stitcher, StitchStats

__all__ = [
    "Nuclei",
    "RunMismatchError",
    "StitchStats",
    "Stitcher",
    "Tile",
    "TilePlan",
    "TiledResult",
    "TilingConfig",
    "infer_image",
    "infer_slide",
    "plan_tiles",
]
