"""``hvx.slide``: the large-image and slide readers, now in :mod:`hvx.io.slides`.

Kept so that scripts written against ``hvx.slide`` (documented in earlier
releases) go on working; new code imports from :mod:`hvx.io.slides` or
:mod:`hvx.io`.
"""

from hvx.io.slides import (
    SLIDE_SUFFIXES,
    ArrayReader,
    OpenSlideReader,
    ResampledReader,
    SlideReadError,
    TiffReader,
    open_image,
    tissue_mask,
)

__all__ = [
    "SLIDE_SUFFIXES",
    "ArrayReader",
    "OpenSlideReader",
    "ResampledReader",
    "SlideReadError",
    "TiffReader",
    "open_image",
    "tissue_mask",
]
