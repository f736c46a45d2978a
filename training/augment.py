"""Training augmentation: HoVer-Net's set plus the affine transform (SPEC §5, §7e).

One call draws, in this order, from the given ``numpy.random.Generator``:

1. **Geometry** (image and both label maps, one draw): an affine map about the
   tile centre, ``T(centre + shift) · R(rotate) · Shear_x(shear) ·
   S(scale_x, scale_y) · T(-centre)`` (imgaug ``Affine`` semantics; the
   composition order is hvx's, the ranges are the reference's), warped with
   ``cv2.warpAffine`` ``INTER_NEAREST`` and a constant 0 border; then a
   left-right flip and an up-down flip, each with probability 0.5. The
   reference uses nearest (``order=0``) for the image too, and so does hvx:
   the warp is applied once, to a map of source-pixel indices, and the image,
   the instance map and the class map are all gathered through that one map.
   So they stay aligned pixel for pixel, every output pixel of an instance
   comes from that instance (one class per instance is kept), label dtypes are
   kept and no label is re-derived. Instances may lose pixels at the border or
   split into pieces under shrinking; ``hvx.training.targets`` handles both.
2. **One of** (image only): Gaussian blur (kernel size per axis drawn from
   ``blur_ksizes``, sigma from the size, replicated border), median blur
   (kernel from ``blur_ksizes``), or additive Gaussian noise (sigma ~
   U(``noise_scale``), independent per channel with probability
   ``noise_per_channel``, else one noise plane for all channels; rounded).
3. **Colour** (image only), the four in a random order: hue shift on OpenCV's
   8-bit HSV (``h = (h + U(hue)) mod 180``, truncated to uint8), saturation
   (``img * a + gray * (1 - a)``, ``a = 1 + U(saturation)``), brightness
   (``img + U(brightness)``), contrast (``img * a + mean * (1 - a)``, ``a ~
   U(contrast)``, ``mean`` per channel). Each result is clipped to [0, 255] and
   truncated to uint8. Unlike the reference (SPEC §5), contrast really is
   applied (SPEC §7e). A hue range of (0, 0) skips the hue step (the 8-bit
   HSV round trip alone changes colours slightly).

Stain and scanner variation (each off by default, so older configs are unchanged;
drawn after the geometry and before step 2 unless stated):

- **HED jitter** (``hed``): colour deconvolution into haematoxylin, eosin and
  DAB optical densities (Ruifrok & Johnston; scikit-image's ``rgb2hed``
  matrices and log handling, re-implemented vectorised: :func:`rgb_to_hed`,
  :func:`hed_to_rgb`), each stain scaled by ``U(hed_scale)`` and shifted by
  ``U(hed_shift)`` (Tellez et al. 2018), back to RGB, rounded.
- **JPEG** (``jpeg``, after the colour step): with probability ``jpeg_p``, an
  ``cv2.imencode`` / ``imdecode`` round trip at a quality from ``jpeg_quality``.
- **Isotropic scale** (``scale_isotropic``): the affine's y scale equals its x
  scale (a magnification change keeps shapes), so ``scale`` is a zoom range
  around the data's magnification (40x for CoNSeP and MoNuSeg).

Given the generator's state, the output is deterministic.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import cv2
import numpy as np

from hvx import _dictconfig

__all__ = ["AugmentConfig", "Augmenter", "affine_matrix", "hed_to_rgb", "rgb_to_hed"]

_Range = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; defaults are the paper's (SPEC §5 + §7e).

    Attributes:
        affine: apply the affine transform (off in the CoNiC baseline, on in the paper).
        scale: range of the x and y scale factors, drawn independently.
        translate: range of the x (y) shift as a fraction of the width (height).
        shear: range of the x-shear angle, degrees.
        rotate: range of the rotation angle, degrees.
        flip_lr: probability of a left-right flip.
        flip_ud: probability of an up-down flip.
        blur_noise: apply one of Gaussian blur, median blur, additive noise.
        blur_ksizes: odd kernel sizes drawn uniformly (per axis for the
            Gaussian blur); 1 = no blur. Reference: ``2 * randint(0, 3) + 1``.
        noise_scale: range of the noise standard deviation, in 0..255 units.
        noise_per_channel: probability of drawing the noise per channel.
        colour: apply hue, saturation, brightness and contrast in random order.
        hue: range of the hue shift, OpenCV 8-bit hue units (0..180 = 0..360 deg);
            (0, 0) skips the step.
        saturation: range of the saturation change ``a - 1``.
        brightness: range of the added brightness, 0..255 units.
        contrast: range of the contrast factor.
        hed: apply the HED stain jitter (module docstring).
        hed_scale: range of the per-stain optical-density factor.
        hed_shift: range of the per-stain optical-density shift.
        jpeg: apply a JPEG round trip (with probability ``jpeg_p``).
        jpeg_quality: range of the JPEG quality (integers drawn uniformly).
        jpeg_p: probability of the JPEG round trip.
        scale_isotropic: one scale factor for x and y.
    """

    affine: bool = True
    scale: _Range = (0.8, 1.2)
    translate: _Range = (-0.01, 0.01)
    shear: _Range = (-5.0, 5.0)
    rotate: _Range = (-179.0, 179.0)
    flip_lr: float = 0.5
    flip_ud: float = 0.5
    blur_noise: bool = True
    blur_ksizes: tuple[int, ...] = (1, 3, 5)
    noise_scale: _Range = (0.0, 0.05 * 255)
    noise_per_channel: float = 0.5
    colour: bool = True
    hue: _Range = (-8.0, 8.0)
    saturation: _Range = (-0.2, 0.2)
    brightness: _Range = (-26.0, 26.0)
    contrast: _Range = (0.75, 1.25)
    hed: bool = False
    hed_scale: _Range = (0.9, 1.1)
    hed_shift: _Range = (-0.02, 0.02)
    jpeg: bool = False
    jpeg_quality: _Range = (40.0, 95.0)
    jpeg_p: float = 0.5
    scale_isotropic: bool = False

    #: :mod:`hvx._dictconfig`: every field may be left out of a dict (the paper's default).
    DEFAULTED_KEYS = _dictconfig.EVERY_FIELD

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "bool":
                if not isinstance(value, bool):
                    raise TypeError(f"{field.name}: expected a bool, got {value!r}")
            elif field.type == "_Range":
                _check_range(field.name, value)
                object.__setattr__(self, field.name, (float(value[0]), float(value[1])))
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"jpeg_quality: expected a range in [1, 100], got {self.jpeg_quality}")
        if self.hed_scale[0] < 0:
            raise ValueError(f"hed_scale: expected factors >= 0, got {self.hed_scale}")
        for name in ("flip_lr", "flip_ud", "noise_per_channel", "jpeg_p"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {p!r}")
        if self.scale[0] <= 0:
            raise ValueError(f"scale: expected positive factors, got {self.scale}")
        if not -90 < self.shear[0] <= self.shear[1] < 90:
            raise ValueError(f"shear: expected angles in (-90, 90) degrees, got {self.shear}")
        if self.noise_scale[0] < 0:
            raise ValueError(f"noise_scale: expected a non-negative range, got {self.noise_scale}")
        if self.contrast[0] < 0 or self.saturation[0] < -1:
            raise ValueError(
                f"contrast/saturation: expected factors >= 0, got {self.contrast}, "
                f"1 + {self.saturation}"
            )
        ks = tuple(self.blur_ksizes)
        if not ks or any(
            isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 for k in ks
        ):
            raise ValueError(f"blur_ksizes: expected odd positive ints, got {self.blur_ksizes!r}")
        object.__setattr__(self, "blur_ksizes", ks)

    @classmethod
    def none(cls) -> AugmentConfig:
        """A configuration that changes nothing (validation, tests)."""
        return cls(
            affine=False, flip_lr=0.0, flip_ud=0.0, blur_noise=False, colour=False, hed=False
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready dict (ranges as lists)."""
        return _dictconfig.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "AugmentConfig") -> AugmentConfig:
        """Builds a config from a (partial) dict (the rule of :mod:`hvx._dictconfig`).

        Every field has a documented default (the paper's, see the class
        docstring; ``DEFAULTED_KEYS``): keys left out keep it.

        Raises:
            ValueError: On an unknown key, a mistyped or invalid value.
        """
        return _dictconfig.from_dict(cls, d, source=source)


def _check_range(name: str, value: Any) -> None:
    ok = (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
    )
    if not ok or value[0] > value[1]:
        raise ValueError(f"{name}: expected a (low, high) pair of finite numbers, got {value!r}")


def affine_matrix(
    shape: tuple[int, int],
    *,
    scale: tuple[float, float] = (1.0, 1.0),
    translate: tuple[float, float] = (0.0, 0.0),
    shear: float = 0.0,
    rotate: float = 0.0,
) -> np.ndarray:
    """The 2x3 forward affine map (source (x, y) -> output (x, y)) about the tile centre.

    Args:
        shape: (H, W) of the tile; the centre is ((W - 1) / 2, (H - 1) / 2).
        scale: (x, y) scale factors.
        translate: (x, y) shift as fractions of W and H.
        shear: x-shear angle, degrees (``x += tan(shear) * y``).
        rotate: rotation angle, degrees (counter-clockwise on screen for positive).

    Returns:
        ndarray[2, 3] float64, as ``cv2.warpAffine`` takes it.
    """
    h, w = shape
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    t = math.radians(rotate)
    rot = np.array([[math.cos(t), math.sin(t), 0], [-math.sin(t), math.cos(t), 0], [0, 0, 1]])
    shr = np.array([[1, math.tan(math.radians(shear)), 0], [0, 1, 0], [0, 0, 1]])
    scl = np.diag([scale[0], scale[1], 1.0])
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    back = np.array([[1, 0, cx + translate[0] * w], [0, 1, cy + translate[1] * h], [0, 0, 1]])
    return (back @ rot @ shr @ scl @ to_origin)[:2]


class Augmenter:
    """Applies :class:`AugmentConfig` to one tile and its labels.

    Args:
        config: the settings.
    """

    def __init__(self, config: AugmentConfig = AugmentConfig()) -> None:
        if not isinstance(config, AugmentConfig):
            raise TypeError(f"config: expected an AugmentConfig, got {type(config).__name__}")
        self.config = config

    def __call__(
        self, image: np.ndarray, inst: np.ndarray, cls: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Augments one tile; the inputs are not modified.

        Args:
            image: ndarray[H, W, 3] uint8 RGB.
            inst: ndarray[H, W] int (any integer dtype), instance map.
            cls: ndarray[H, W] int (any integer dtype), class map.
            rng: the only source of randomness.

        Returns:
            ``(image, inst, cls)``: new arrays of the input shapes and dtypes.
        """
        _check_inputs(image, inst, cls, rng)
        index = self._geometry(image.shape[:2], rng)
        if index is None:
            image, inst, cls = image.copy(), inst.copy(), cls.copy()
        else:
            image = _gather(image.reshape(-1, 3), index)
            inst = _gather(inst.ravel(), index)
            cls = _gather(cls.ravel(), index)
        cfg = self.config
        if cfg.hed:
            image = hed_jitter(
                image, rng.uniform(*cfg.hed_scale, size=3), rng.uniform(*cfg.hed_shift, size=3)
            )
        if cfg.blur_noise:
            image = _blur_or_noise(image, cfg, rng)
        if cfg.colour:
            ops = (_hue, _saturation, _brightness, _contrast)
            for k in rng.permutation(len(ops)):
                image = ops[k](image, cfg, rng)
        if cfg.jpeg and rng.random() < cfg.jpeg_p:
            quality = int(rng.integers(int(cfg.jpeg_quality[0]), int(cfg.jpeg_quality[1]) + 1))
            image = jpeg_roundtrip(image, quality)
        return np.ascontiguousarray(image), inst, cls

    def _geometry(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray | None:
        """Source-pixel index of each output pixel (-1 outside), or None for identity."""
        cfg = self.config
        h, w = shape
        index = None
        if cfg.affine:
            sx, sy = rng.uniform(*cfg.scale), rng.uniform(*cfg.scale)
            if cfg.scale_isotropic:
                sy = sx
            tx, ty = rng.uniform(*cfg.translate), rng.uniform(*cfg.translate)
            shear, rotate = rng.uniform(*cfg.shear), rng.uniform(*cfg.rotate)
            m = affine_matrix(shape, scale=(sx, sy), translate=(tx, ty), shear=shear, rotate=rotate)
            source = np.arange(h * w, dtype=np.int32).reshape(h, w)
            index = cv2.warpAffine(
                source,
                m,
                (w, h),
                flags=cv2.INTER_NEAREST,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=-1,
            )
        flip_lr, flip_ud = rng.random() < cfg.flip_lr, rng.random() < cfg.flip_ud
        if (flip_lr or flip_ud) and index is None:
            index = np.arange(h * w, dtype=np.int32).reshape(h, w)
        if flip_lr:
            index = index[:, ::-1]
        if flip_ud:
            index = index[::-1]
        return index


def _gather(flat: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``flat[index]`` with index -1 reading 0 (a zero sentinel appended at the end)."""
    padded = np.concatenate([flat, np.zeros((1, *flat.shape[1:]), flat.dtype)])
    return padded[index]


def _check_inputs(image: Any, inst: Any, cls: Any, rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        got = image.shape if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image: expected ndarray[H, W, 3], got {got}")
    if image.dtype != np.uint8:
        raise TypeError(f"image: expected dtype uint8, got {image.dtype}")
    if image.shape[0] * image.shape[1] >= 2**31:
        raise ValueError(f"image: expected fewer than 2**31 pixels, got shape {image.shape}")
    for name, arr in (("inst", inst), ("cls", cls)):
        if not isinstance(arr, np.ndarray) or arr.shape != image.shape[:2]:
            got = arr.shape if isinstance(arr, np.ndarray) else type(arr).__name__
            raise ValueError(f"{name}: expected shape {image.shape[:2]} like the image, got {got}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{name}: expected an integer dtype, got {arr.dtype}")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Clips to [0, 255] and truncates to uint8 (the reference's ``astype``)."""
    return np.clip(x, 0, 255).astype(np.uint8)


def _blur_or_noise(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    choice = int(rng.integers(3))
    ks = cfg.blur_ksizes
    if choice == 0:
        kx, ky = ks[int(rng.integers(len(ks)))], ks[int(rng.integers(len(ks)))]
        return cv2.GaussianBlur(image, (kx, ky), 0, borderType=cv2.BORDER_REPLICATE)
    if choice == 1:
        k = ks[int(rng.integers(len(ks)))]
        return cv2.medianBlur(image, k) if k > 1 else image
    sigma = rng.uniform(*cfg.noise_scale)
    channels = 3 if rng.random() < cfg.noise_per_channel else 1
    noise = rng.standard_normal((*image.shape[:2], channels), dtype=np.float32) * np.float32(sigma)
    return np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)


_VALUES = np.arange(256, dtype=np.float32)


def _hue(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    shift = rng.uniform(*cfg.hue)
    if cfg.hue == (0.0, 0.0):  # the 8-bit HSV round trip is lossy: skip a null shift
        return image
    lut = np.minimum(np.mod(np.arange(256) + shift, 180.0), 179.0).astype(np.uint8)  # truncation
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = lut[hsv[..., 0]]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _saturation(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    a = np.float32(1.0 + rng.uniform(*cfg.saturation))
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None].astype(np.float32)
    return _to_uint8(image * a + gray * (np.float32(1.0) - a))


def _brightness(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    lut = _to_uint8(_VALUES + np.float32(rng.uniform(*cfg.brightness)))  # = clip(img + d)
    return cv2.LUT(image, lut)


def _contrast(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    a = np.float32(rng.uniform(*cfg.contrast))
    mean = image.mean(axis=(0, 1), dtype=np.float64).astype(np.float32)
    lut = _to_uint8(_VALUES[:, None] * a + mean * (np.float32(1.0) - a))  # [256, 3]
    return cv2.LUT(image, np.ascontiguousarray(lut.reshape(256, 1, 3)))


# ---- stain and scanner variation ---------------------------------------------------------

#: Ruifrok & Johnston's H, E, DAB optical-density vectors (rows), as scikit-image's
#: ``skimage.color.rgb_from_hed``; its inverse maps optical densities to stains.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
_LOG_ADJUST = math.log(1e-6)


def rgb_to_hed(image: np.ndarray) -> np.ndarray:
    """RGB -> stain densities, as ``skimage.color.rgb2hed`` (vectorised, float64).

    Args:
        image: ndarray[..., 3] uint8 RGB.

    Returns:
        ndarray[..., 3] float64: haematoxylin, eosin, DAB (>= 0).
    """
    if image.dtype != np.uint8 or image.shape[-1:] != (3,):
        raise ValueError(f"image: expected uint8 [..., 3], got {image.dtype} {image.shape}")
    return np.maximum(_stains(image), 0.0)


def _stains(image: np.ndarray) -> np.ndarray:
    """Unclamped stain densities: ``rgb_to_hed`` before its clamp at 0 (exactly invertible)."""
    lut = np.log(np.maximum(np.arange(256) / 255.0, 1e-6)) / _LOG_ADJUST
    return lut[image] @ HED_FROM_RGB


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """Stain densities -> RGB in [0, 1], as ``skimage.color.hed2rgb`` (float64).

    Args:
        hed: ndarray[..., 3] float: haematoxylin, eosin, DAB.

    Returns:
        ndarray[..., 3] float64 RGB in [0, 1].
    """
    hed = np.asarray(hed, dtype=np.float64)
    if hed.shape[-1:] != (3,):
        raise ValueError(f"hed: expected [..., 3], got {hed.shape}")
    return np.clip(np.exp((hed * _LOG_ADJUST) @ RGB_FROM_HED), 0.0, 1.0)


def hed_jitter(image: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Scales and shifts each stain's optical density: ``hed * scale + shift``.

    The densities are ``rgb_to_hed``'s before its clamp at 0 (colours outside the
    H-E-DAB cone have a negative component), so scale 1 and shift 0 give the
    image back (up to rounding) instead of shifting such colours.

    Args:
        image: ndarray[H, W, 3] uint8 RGB.
        scale: (3,) factors for H, E, DAB.
        shift: (3,) shifts for H, E, DAB (optical-density units of ``rgb_to_hed``).

    Returns:
        ndarray[H, W, 3] uint8 RGB (rounded).
    """
    if image.dtype != np.uint8 or image.shape[-1:] != (3,):
        raise ValueError(f"image: expected uint8 [..., 3], got {image.dtype} {image.shape}")
    hed = _stains(image) * np.asarray(scale, np.float64) + np.asarray(shift, np.float64)
    return np.rint(hed_to_rgb(hed) * 255.0).astype(np.uint8)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encodes as JPEG at ``quality`` (1..100) and decodes (ndarray[H, W, 3] uint8 RGB)."""
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
