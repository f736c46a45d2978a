"""Large images and whole slides: tiles, seams, streaming outputs, resumable runs.

- :mod:`hvx.tiling.plan`: overlapping tiles and their centre regions.
- :mod:`hvx.tiling.stitch`: each nucleus kept exactly once, whole, ids streamed
  (:mod:`hvx.tiling.views`: a tile's view of a nucleus and its pixel operations).
- :mod:`hvx.tiling.stages`: reader thread, engine thread and caller, overlapped.
- streamed GeoJSON / CSV / label TIFF writers: :mod:`hvx.io.streams`.
- :mod:`hvx.tiling.resume`: run identity, per-region completion records.
- :mod:`hvx.tiling.pipeline`: :class:`TilingConfig`, :func:`infer_image`.
- :mod:`hvx.tiling.slide_run`: :func:`infer_slide`, streamed to files, resumable.

Nuclei come out as :class:`hvx.results.Nuclei`: the :class:`hvx.results.NucleusTable`
columns plus ``masks``, ``cut`` and ``tile``.
"""

from hvx.results import Nuclei
from hvx.tiling.pipeline import TiledResult, TilingConfig, infer_image
from hvx.tiling.plan import Tile, TilePlan, plan_tiles
from hvx.tiling.resume import RunMismatchError
from hvx.tiling.slide_run import infer_slide
from hvx.tiling.stitch import Stitcher, StitchStats

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
