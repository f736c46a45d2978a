"""hvx: fast, exact ConvNeXt HoVer-Net nuclei segmentation and classification.

Importing hvx is cheap and has no side effects: heavy modules (torch, the
native extension, Triton kernels) load when first used.
"""

from hvx._version import __version__

__all__ = ["__version__"]
