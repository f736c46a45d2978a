"""Stain normalisation at inference (an opt-in user option): Reinhard and Macenko.

A model learns the colours of the slides it was trained on. Mapping a new lab's
H&E onto those colours before inference is what other toolkits offer; in hvx it
is off by default (the default model is trained with stain augmentation instead,
docs/model-card.md) and on with ``hvx infer/slide --stain-norm reinhard|macenko``
or, in Python::

    from hvx.stain import StainNormalizer

    norm = StainNormalizer("macenko")  # the default target: CoNSeP's training images
    rgb = norm(image)  # fit on the image, then map it
    result = engine.infer(rgb)

A normaliser has two halves: :meth:`StainNormalizer.fit` measures a *source*
(one image, or a slide's tissue on its thumbnail) and :meth:`StainNormalizer.apply`
maps any pixels of that source with the measurement. Tiles of one slide must share
one fit, or neighbouring tiles would be mapped differently:
:class:`NormalizedReader` fits once on the slide's tissue and maps every region
read through it.

- **Reinhard** (Reinhard et al., "Color transfer between images", IEEE CG&A 2001):
  per-channel mean and standard deviation in CIE L*a*b* are moved to the target's.
  Computed with OpenCV's float L*a*b* (:func:`reinhard_apply`); :func:`reinhard_ref`
  is the float64 scikit-image twin the tests compare it with.
- **Macenko** (Macenko et al., "A method for normalizing histology slides for
  quantitative analysis", ISBI 2009): the two stain vectors are found in optical
  density space (the plane of the two largest principal components, the 1st and
  99th percentile angles), each pixel's stain concentrations are rescaled to the
  target's 99th percentiles and re-rendered with the target's stain vectors. The
  constants (Io 240, beta 0.15, alpha 1) and every step follow the reference
  implementation (M. Veta's, as ported by torchstain, which the tests compare with).

The default targets are those of a typical image of CoNSeP's official training set
(the median over its 27 images of each image's fit; 40x), the colours the default
model first learnt. Pooling the pixels of many images instead gives a poor Macenko
target: the extreme stain angles of a mixture of slides are outliers. A user's
own target comes from :meth:`StainNormalizer.from_images` (one or more images).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from hvx.io.slides import tissue_mask

__all__ = [
    "METHODS",
    "NormalizedReader",
    "StainNormalizer",
    "macenko_apply",
    "macenko_fit",
    "normalizer_from_options",
    "reinhard_apply",
    "reinhard_fit",
    "reinhard_ref",
]

#: The stain normalisation methods, as ``--stain-norm`` spells them.
METHODS = ("reinhard", "macenko")

#: The default targets: :meth:`StainNormalizer.from_images` of the 27 images of
#: CoNSeP's official training set (each image's 16 tiles of 256 x 256 pooled), the
#: median over images of each fitted value. Reinhard: L*a*b* mean and standard
#: deviation (OpenCV float L*a*b*, L in 0..100).
CONSEP_LAB_MEAN = (75.80293, 20.26497, -15.04923)
CONSEP_LAB_STD = (14.41735, 8.97071, 8.62756)
#: Macenko: stain vectors (columns H, E; rows R, G, B optical density, unit length)
#: and 99th-percentile concentrations.
CONSEP_HE = ((0.60255, 0.49812), (0.7332, 0.83433), (0.31521, 0.23616))
CONSEP_MAX_C = (0.93161, 0.79762)

#: :meth:`StainNormalizer.fit` measures larger images on a strided subset of pixels.
FIT_MAX_PIXELS = 2048 * 2048
#: :meth:`StainNormalizer.apply` maps at most this many pixels at once.
APPLY_CHUNK_PIXELS = 1 << 20

#: Macenko constants of the reference implementation.
MACENKO_IO = 240.0  # transmitted light intensity
MACENKO_BETA = 0.15  # optical density below which a pixel counts as transparent
MACENKO_ALPHA = 1.0  # percentile of the extreme angles (robust min / max)


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"expected a stain method in {METHODS}, got {method!r}")
    return method


def _check_rgb(image: Any, what: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected {what} as an (H, W, 3) uint8 RGB array, got shape {image.shape} "
            f"dtype {image.dtype}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected a non-empty {what}, got shape {image.shape}")
    return image


def _pixels(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``ndarray[N, 3] uint8``: the pixels of ``image`` (those under ``mask`` if given)."""
    if mask is None:
        return image.reshape(-1, 3)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"expected a mask of shape {image.shape[:2]}, got {mask.shape}")
    px = image[mask]
    if px.shape[0] == 0:
        raise ValueError("expected at least one pixel under the mask to fit on, got none")
    return px


# ---------------------------------------------------------------- Reinhard


def _lab(rgb: np.ndarray) -> np.ndarray:
    """OpenCV float L*a*b* of uint8 RGB (any shape ending in 3), float32."""
    import cv2

    flat = rgb.reshape(-1, 1, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(flat, cv2.COLOR_RGB2LAB).reshape(rgb.shape)


def reinhard_fit(image: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """L*a*b* mean and standard deviation of an image's pixels (or those under ``mask``).

    Args:
        image: ``ndarray[H, W, 3] uint8`` RGB.
        mask: Optional ``ndarray[H, W] bool``: fit on these pixels only.

    Returns:
        ``{"mean": [3 floats], "std": [3 floats]}`` (JSON-ready).
    """
    return _lab_stats(_lab(_pixels(_check_rgb(image), mask)))


def _lab_stats(lab: np.ndarray) -> dict:
    """Mean and standard deviation per channel of float32 L*a*b* (accumulated in float64)."""
    import cv2

    mean, std = cv2.meanStdDev(np.ascontiguousarray(lab.reshape(-1, 1, 3)))
    return {"mean": mean.ravel().tolist(), "std": std.ravel().tolist()}


def reinhard_apply(image: np.ndarray, source: dict, target: dict) -> np.ndarray:
    """Moves ``image``'s L*a*b* statistics from ``source`` to ``target`` (OpenCV float).

    Args:
        image: ``ndarray[H, W, 3] uint8`` RGB.
        source: :func:`reinhard_fit` of the image (or of the slide it comes from).
        target: The same for the target colours.

    Returns:
        ``ndarray[H, W, 3] uint8`` RGB, rounded and clipped.
    """
    image = _check_rgb(image)
    return _reinhard_map(image, _lab(image), source, target)


def _reinhard_map(image: np.ndarray, lab: np.ndarray, source: dict, target: dict) -> np.ndarray:
    import cv2

    gain = np.asarray(target["std"]) / np.maximum(np.asarray(source["std"]), 1e-6)
    shift = np.asarray(target["mean"]) - np.asarray(source["mean"]) * gain
    lab = lab.reshape(-1, 1, 3) * gain.astype(np.float32) + shift.astype(np.float32)
    rgb = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    rgb *= 255.0
    np.rint(rgb, out=rgb)
    np.clip(rgb, 0, 255, out=rgb)
    return rgb.astype(np.uint8).reshape(image.shape)


def reinhard_ref(image: np.ndarray, target: dict, mask: np.ndarray | None = None) -> np.ndarray:
    """Reference twin of :func:`reinhard_fit` + :func:`reinhard_apply`: scikit-image, float64.

    The L*a*b* formulas differ from OpenCV's by < 0.5 units (OpenCV tabulates the
    sRGB curve), so the two agree to a grey level or two, not bit for bit.
    """
    from skimage import color

    image = _check_rgb(image)
    lab = color.rgb2lab(image)
    px = lab.reshape(-1, 3) if mask is None else lab[np.asarray(mask, bool)]
    mean, std = px.mean(0), px.std(0)
    out = (lab - mean) / np.maximum(std, 1e-6) * np.asarray(target["std"]) + np.asarray(
        target["mean"]
    )
    rgb = color.lab2rgb(out)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- Macenko


def _od(px: np.ndarray) -> np.ndarray:
    """Optical density ``-log((I + 1) / Io)`` of ``ndarray[N, 3] uint8``, float64."""
    return -np.log((px.astype(np.float64) + 1.0) / MACENKO_IO)


def _stain_vectors(od_hat: np.ndarray) -> np.ndarray:
    """``ndarray[3, 2]``: H and E optical-density vectors of the stained pixels."""
    _, vecs = np.linalg.eigh(np.cov(od_hat.T))
    plane = vecs[:, 1:3]
    t = od_hat @ plane
    phi = np.arctan2(t[:, 1], t[:, 0])
    lo, hi = np.percentile(phi, MACENKO_ALPHA), np.percentile(phi, 100 - MACENKO_ALPHA)
    v_min = plane @ np.array([np.cos(lo), np.sin(lo)])
    v_max = plane @ np.array([np.cos(hi), np.sin(hi)])
    # haematoxylin first: the vector with the larger red optical density
    return np.stack([v_min, v_max] if v_min[0] > v_max[0] else [v_max, v_min], axis=1)


def _concentrations(od: np.ndarray, he: np.ndarray) -> np.ndarray:
    """``ndarray[2, N]``: least-squares stain concentrations of ``od[N, 3]``."""
    return np.linalg.pinv(he) @ od.T


def macenko_fit(image: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Stain vectors and 99th-percentile concentrations of an image (or its masked pixels).

    Args:
        image: ``ndarray[H, W, 3] uint8`` RGB.
        mask: Optional ``ndarray[H, W] bool``: fit on these pixels only.

    Returns:
        ``{"he": [[h_r, e_r], [h_g, e_g], [h_b, e_b]], "max_c": [h, e]}`` (JSON-ready).

    Raises:
        ValueError: When fewer than 3 pixels are stained (optical density >= beta in
            every channel): a blank or white image has no stains to measure.
    """
    he, _, max_c = _macenko_measure(_od(_pixels(_check_rgb(image), mask)))
    return {"he": he.tolist(), "max_c": max_c.tolist()}


def _macenko_measure(od: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(he[3, 2], c[2, N], max_c[2])`` of the optical densities ``od[N, 3]``."""
    od_hat = od[~np.any(od < MACENKO_BETA, axis=1)]
    if od_hat.shape[0] < 3:
        raise ValueError(
            f"expected stained pixels to measure the stains on (optical density >= "
            f"{MACENKO_BETA} in R, G and B), got {od_hat.shape[0]} of {od.shape[0]}: is "
            "the image blank or background only?"
        )
    he = _stain_vectors(od_hat)
    c = _concentrations(od, he)
    return he, c, np.percentile(c, 99, axis=1)


def macenko_apply(image: np.ndarray, source: dict, target: dict) -> np.ndarray:
    """Re-renders ``image`` with ``target``'s stains (float64, as the reference).

    Args:
        image: ``ndarray[H, W, 3] uint8`` RGB.
        source: :func:`macenko_fit` of the image (or of the slide it comes from).
        target: The same for the target colours.

    Returns:
        ``ndarray[H, W, 3] uint8`` RGB (values above 255 clipped, then truncated,
        as the reference implementation does).
    """
    image = _check_rgb(image)
    c = _concentrations(_od(image.reshape(-1, 3)), np.asarray(source["he"]))
    return _macenko_render(c, image.shape, source["max_c"], target)


def _macenko_render(c: np.ndarray, shape: tuple, max_c, target: dict) -> np.ndarray:
    """Concentrations ``c[2, N]`` (modified) rescaled from ``max_c`` to the target's, rendered."""
    c /= (np.asarray(max_c) / np.asarray(target["max_c"]))[:, None]
    out = MACENKO_IO * np.exp(-np.asarray(target["he"]) @ c)
    np.minimum(out, 255.0, out=out)
    return out.T.reshape(shape).astype(np.uint8)


# ---------------------------------------------------------------- the user-facing pair

_FIT = {"reinhard": reinhard_fit, "macenko": macenko_fit}
_APPLY = {"reinhard": reinhard_apply, "macenko": macenko_apply}
_DEFAULT_TARGET = {
    "reinhard": {"mean": list(CONSEP_LAB_MEAN), "std": list(CONSEP_LAB_STD)},
    "macenko": {"he": [list(r) for r in CONSEP_HE], "max_c": list(CONSEP_MAX_C)},
}


@dataclasses.dataclass(frozen=True)
class StainNormalizer:
    """A stain normalisation method and its target colours.

    Args:
        method: ``"reinhard"`` or ``"macenko"``.
        target: The target's fit (:func:`reinhard_fit` / :func:`macenko_fit` output);
            None = CoNSeP's training tiles (the colours the default model first learnt).

    Raises:
        ValueError: On an unknown method or a target of the wrong form.
    """

    method: str
    target: dict | None = None

    def __post_init__(self) -> None:
        _check_method(self.method)
        target = _DEFAULT_TARGET[self.method] if self.target is None else self.target
        keys = set(_DEFAULT_TARGET[self.method])
        if not isinstance(target, dict) or set(target) != keys:
            raise ValueError(
                f"expected a {self.method} target with keys {sorted(keys)}, got {target!r}"
            )
        arr = {k: np.asarray(v, dtype=np.float64) for k, v in target.items()}
        shapes = {k: np.shape(v) for k, v in _DEFAULT_TARGET[self.method].items()}
        if any(arr[k].shape != s or not np.isfinite(arr[k]).all() for k, s in shapes.items()):
            raise ValueError(f"expected a {self.method} target of shapes {shapes}, got {target!r}")
        object.__setattr__(self, "target", {k: v.tolist() for k, v in arr.items()})

    @classmethod
    def from_image(
        cls, method: str, image: np.ndarray, mask: np.ndarray | None = None
    ) -> StainNormalizer:
        """A normaliser whose target colours are those of ``image`` (uint8 RGB)."""
        return cls(method, _FIT[_check_method(method)](image, mask))

    @classmethod
    def from_images(cls, method: str, images) -> StainNormalizer:
        """A target typical of several images: the median over images of each fitted value.

        Macenko's stain vectors are renormalised to unit length after the median.

        Args:
            method: ``"reinhard"`` or ``"macenko"``.
            images: Non-empty iterable of ``ndarray[H, W, 3] uint8`` RGB (any sizes).
        """
        fit = _FIT[_check_method(method)]
        fits = [fit(im) for im in images]
        if not fits:
            raise ValueError(
                "expected at least one image to take the target colours from, got none"
            )
        if len(fits) == 1:
            return cls(method, fits[0])
        target = {k: np.median([f[k] for f in fits], axis=0) for k in fits[0]}
        if method == "macenko":
            target["he"] = target["he"] / np.linalg.norm(target["he"], axis=0)
        return cls(method, {k: v.tolist() for k, v in target.items()})

    def fit(self, image: np.ndarray, mask: np.ndarray | None = None) -> dict:
        """Measures a source (``ndarray[H, W, 3] uint8``; optionally only under ``mask``).

        Images above :data:`FIT_MAX_PIXELS` are fitted on an evenly strided subset
        of their pixels (every s-th row and column), which bounds memory.
        """
        image = _check_rgb(image)
        step = math.ceil(math.sqrt(image.shape[0] * image.shape[1] / FIT_MAX_PIXELS))
        if step > 1:
            image = image[::step, ::step]
            mask = None if mask is None else np.asarray(mask)[::step, ::step]
        return _FIT[self.method](image, mask)

    def apply(self, image: np.ndarray, source: dict) -> np.ndarray:
        """Maps ``image`` (uint8 RGB) from the measured ``source`` colours to the target's.

        Pixel by pixel, in blocks of rows of at most :data:`APPLY_CHUNK_PIXELS`
        (the same result as one block; bounded memory for large images).
        """
        image = _check_rgb(image)
        rows = max(1, APPLY_CHUNK_PIXELS // image.shape[1])
        if image.shape[0] <= rows:
            return _APPLY[self.method](image, source, self.target)
        out = np.empty_like(image)
        for y in range(0, image.shape[0], rows):
            out[y : y + rows] = _APPLY[self.method](image[y : y + rows], source, self.target)
        return out

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Fits on ``image`` and maps it: ``ndarray[H, W, 3] uint8`` in and out.

        Equal to ``apply(image, fit(image))``; a small image (one block) is
        converted once (L*a*b*, or optical densities and concentrations).
        """
        image = _check_rgb(image)
        if image.shape[0] * image.shape[1] > APPLY_CHUNK_PIXELS:
            return self.apply(image, self.fit(image))
        if self.method == "reinhard":
            lab = _lab(image)
            return _reinhard_map(image, lab, _lab_stats(lab), self.target)
        _, c, max_c = _macenko_measure(_od(image.reshape(-1, 3)))
        return _macenko_render(c, image.shape, max_c, self.target)

    def identity(self) -> dict:
        """JSON-ready description (what a resumed run must share)."""
        return {"method": self.method, "target": self.target}


def normalizer_from_options(method: str | None, target=None) -> StainNormalizer | None:
    """The normaliser of ``--stain-norm METHOD [--stain-target IMAGE_OR_FOLDER]``, or None.

    Args:
        method: ``"reinhard"``, ``"macenko"`` or None (off).
        target: None (the default target), an image file, or a folder of images
            (:meth:`StainNormalizer.from_images` of its images).

    Raises:
        ValueError: A target without a method, or an unreadable, empty or unstained
            target.
    """
    from hvx.io import find_images, read_image

    if method is None:
        if target is not None:
            raise ValueError(
                f"expected --stain-norm reinhard|macenko with --stain-target, got only "
                f"--stain-target {target}"
            )
        return None
    if target is None:
        return StainNormalizer(method)
    try:
        files = find_images([target])
        return StainNormalizer.from_images(method, (read_image(f) for f in files))
    except (OSError, ValueError) as e:
        raise ValueError(
            f"expected an H&E image or a folder of them for --stain-target, got {target}: {e}"
        ) from e


class NormalizedReader:
    """A region reader (:mod:`hvx.io.slides`) whose regions come out stain-normalised.

    The source colours are measured once, on the tissue of the reader's thumbnail
    (:func:`hvx.io.slides.tissue_mask`; the whole thumbnail when it finds none), so
    that every region of the slide is mapped alike.

    Args:
        reader: Any reader with ``read``, ``thumbnail``, ``height``, ``width``, ``mpp``.
        normalizer: The method and target.
        max_side: Longest side of the thumbnail fitted on.
        source: A fit made before (this reader's ``source``, e.g. on another
            machine of a Ray cohort): used as is, nothing is fitted.
    """

    def __init__(
        self,
        reader,
        normalizer: StainNormalizer,
        max_side: int = 2048,
        source: dict | None = None,
    ) -> None:
        self.reader = reader
        self.normalizer = normalizer
        self.height, self.width, self.mpp = reader.height, reader.width, reader.mpp
        if source is None:
            thumb = np.ascontiguousarray(reader.thumbnail(max_side))
            mask = tissue_mask(thumb)
            source = normalizer.fit(thumb, mask if mask.any() else None)
        self.source = source

    def read(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Pixels ``[y:y+h, x:x+w]``, normalised."""
        return self.normalizer.apply(
            np.ascontiguousarray(self.reader.read(y, x, h, w)), self.source
        )

    def thumbnail(self, max_side: int = 2048) -> np.ndarray:
        """The source's thumbnail, unnormalised (for the tissue mask)."""
        return self.reader.thumbnail(max_side)

    def identity(self) -> dict:
        """The source's identity plus the normalisation (method, target, fitted source)."""
        return {
            **self.reader.identity(),
            "stain": {**self.normalizer.identity(), "source": self.source},
        }

    def close(self) -> None:
        """Closes the source reader."""
        self.reader.close()

    def __enter__(self) -> NormalizedReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
