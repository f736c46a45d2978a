"""Reference twin of :mod:`hvx.postprocess`, written from SPEC §3 (the oracle in tests).

Pure OpenCV + scipy + scikit-image (< 0.26), step by step as HoVer-Net's
``__proc_np_hv`` / ``process`` and the CoNiC baseline pipeline do it. Slow and
simple on purpose; the C++ path (``hvx._native``) must agree with it pixel for
pixel. ``remove_small_objects`` is re-implemented with the "size < min_size is
removed" rule so the oracle does not depend on the scikit-image version.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from hvx.postprocess import PostprocessConfig

__all__ = [
    "conic_pipeline_ref",
    "instance_table_ref",
    "instances_from_hv_ref",
    "outer_contour_ref",
    "remove_small_objects_ref",
]


def remove_small_objects_ref(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Zeroes labels with fewer than ``min_size`` pixels (hover_net's rule).

    Args:
        labels: ``ndarray[H, W]`` int, 0 = background.
        min_size: Labels with ``count < min_size`` are removed; ``count == min_size`` stays.

    Returns:
        A copy of ``labels`` with the small labels set to 0.
    """
    out = labels.copy()
    if out.size == 0 or out.max() == 0:
        return out
    counts = np.bincount(out.ravel())
    too_small = counts < min_size
    too_small[0] = False
    out[too_small[out]] = 0
    return out


def instances_from_hv_ref(np_prob: np.ndarray, hv: np.ndarray, config=None) -> np.ndarray:
    """SPEC §3a: HoVer-Net's HV-gradient watershed, the straightforward way.

    Args:
        np_prob: ``ndarray[H, W]`` float foreground probability.
        hv: ``ndarray[2, H, W]`` float, channel 0 horizontal, 1 vertical.
        config: A :class:`hvx.postprocess.PostprocessConfig` (defaults when None).

    Returns:
        ``ndarray[H, W]`` int32 instance map (ids = marker labels, may have gaps).
    """
    if config is None:
        config = PostprocessConfig()
    c = config
    np_prob = np.asarray(np_prob, dtype=np.float32)
    h_raw = np.asarray(hv[0], dtype=np.float32)
    v_raw = np.asarray(hv[1], dtype=np.float32)

    blb = np.array(np_prob >= np.float32(c.np_threshold), dtype=np.int32)
    blb = ndi.label(blb)[0]
    blb = remove_small_objects_ref(blb, c.min_object_size)
    blb[blb > 0] = 1

    h = cv2.normalize(h_raw, None, alpha=0, beta=1, norm_type=cv2.NORM_MINMAX, dtype=cv2.CV_32F)
    v = cv2.normalize(v_raw, None, alpha=0, beta=1, norm_type=cv2.NORM_MINMAX, dtype=cv2.CV_32F)
    sobelh = cv2.Sobel(h, cv2.CV_64F, 1, 0, ksize=c.sobel_ksize)
    sobelv = cv2.Sobel(v, cv2.CV_64F, 0, 1, ksize=c.sobel_ksize)
    sobelh = 1 - cv2.normalize(sobelh, None, 0, 1, cv2.NORM_MINMAX, dtype=cv2.CV_32F)
    sobelv = 1 - cv2.normalize(sobelv, None, 0, 1, cv2.NORM_MINMAX, dtype=cv2.CV_32F)

    overall = np.maximum(sobelh, sobelv)
    overall = overall - (1 - blb)  # float32 - int32 -> float64
    overall[overall < 0] = 0

    dist = (1.0 - overall) * blb
    g = c.gaussian_ksize
    dist = -cv2.GaussianBlur(dist, (g, g), 0)

    overall = np.array(overall >= c.marker_threshold, dtype=np.int32)
    marker = blb - overall
    marker[marker < 0] = 0
    marker = ndi.binary_fill_holes(marker).astype(np.uint8)
    if c.opening_ksize > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (c.opening_ksize, c.opening_ksize))
        marker = cv2.morphologyEx(marker, cv2.MORPH_OPEN, kernel)
    marker = ndi.label(marker)[0]
    marker = remove_small_objects_ref(marker, c.min_object_size)
    return watershed(dist, markers=marker, mask=blb).astype(np.int32)


def outer_contour_ref(crop: np.ndarray) -> np.ndarray:
    """``cv2.findContours(crop, RETR_TREE, CHAIN_APPROX_SIMPLE)[0][0]`` of OpenCV 4.

    OpenCV 4 returns the borders in the order it finds them, so ``[0]`` is the outer
    border of the first component in raster order (what HoVer-Net ran with).
    OpenCV >= 4.9 lists sibling top-level borders last-found first; the outer
    border whose start point (its first pixel) comes first in raster order is
    picked here, which is the same contour on every version.

    Args:
        crop: ``ndarray[h, w]`` uint8 binary mask with at least one pixel.

    Returns:
        ``ndarray[K, 2]`` int32 (x, y) points.
    """
    contours, hierarchy = cv2.findContours(crop, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    top = [i for i in range(len(contours)) if hierarchy[0][i][3] == -1]
    first = min(top, key=lambda i: (contours[i][0, 0, 1], contours[i][0, 0, 0]))
    return contours[first].reshape(-1, 2).astype(np.int32)


@dataclasses.dataclass
class _Row:
    id: int
    type: int
    type_prob: float
    centroid: tuple[float, float]
    bbox: tuple[int, int, int, int]
    area: int
    contour: np.ndarray


def instance_table_ref(inst: np.ndarray, type_map: np.ndarray) -> list[_Row]:
    """SPEC §3b records of every instance with an outer contour of >= 3 points.

    Args:
        inst: ``ndarray[H, W]`` int instance map (0 = background).
        type_map: ``ndarray[H, W]`` int type id per pixel.

    Returns:
        One record per kept instance, ascending id.
    """
    rows = []
    ids = np.unique(inst)
    # hover_net iterates unique(inst)[1:], which drops the smallest id when the
    # image has no background pixel; hvx keeps every id > 0 (SPEC §3b intent).
    for inst_id in ids[ids > 0]:
        m = inst == inst_id
        rr = np.nonzero(m.any(axis=1))[0]
        cc = np.nonzero(m.any(axis=0))[0]
        rmin, rmax, cmin, cmax = rr[0], rr[-1] + 1, cc[0], cc[-1] + 1
        crop = m[rmin:rmax, cmin:cmax].astype(np.uint8)
        mom = cv2.moments(crop)
        contour = outer_contour_ref(crop)
        if contour.shape[0] < 3:
            continue
        cx = mom["m10"] / mom["m00"] + cmin
        cy = mom["m01"] / mom["m00"] + rmin
        contour = contour + np.array([cmin, rmin], dtype=np.int32)
        types, counts = np.unique(type_map[rmin:rmax, cmin:cmax][crop > 0], return_counts=True)
        order = sorted(
            zip(types.tolist(), counts.tolist(), strict=True), key=lambda t: t[1], reverse=True
        )  # stable: ties keep ascending type id
        t = order[0][0]
        if t == 0 and len(order) > 1:
            t = order[1][0]
        count = dict(order)[t]
        prob = count / (np.sum(crop) + 1.0e-6)
        rows.append(
            _Row(
                int(inst_id),
                int(t),
                float(prob),
                (float(cy), float(cx)),
                (int(rmin), int(cmin), int(rmax), int(cmax)),
                int(crop.sum()),
                contour,
            )
        )
    return rows


def conic_pipeline_ref(np_prob, hv, type_map, config=None):
    """SPEC §3c: 2x up, §3a + §3b, filled-contour class map, 0.5x down (nearest).

    Args:
        np_prob: ``ndarray[H, W]`` float foreground probability.
        hv: ``ndarray[2, H, W]`` float.
        type_map: ``ndarray[H, W]`` int per-pixel type (argmax of the type head).
        config: A :class:`hvx.postprocess.PostprocessConfig`.

    Returns:
        ``(inst, cls)``: ``ndarray[H, W]`` int32 each.
    """
    np2 = cv2.resize(np.asarray(np_prob, np.float32), (0, 0), fx=2, fy=2)
    hv_hwc = np.ascontiguousarray(np.moveaxis(np.asarray(hv, np.float32), 0, -1))
    hv2 = np.moveaxis(cv2.resize(hv_hwc, (0, 0), fx=2, fy=2), -1, 0)
    tp2 = cv2.resize(
        np.asarray(type_map, np.float32), (0, 0), fx=2, fy=2, interpolation=cv2.INTER_NEAREST
    ).astype(np.int32)
    inst = instances_from_hv_ref(np2, hv2, config)
    cls = np.zeros_like(inst)
    for row in instance_table_ref(inst, tp2):
        cv2.drawContours(cls, [row.contour.reshape(-1, 1, 2)], -1, row.type, thickness=-1)
    return inst[::2, ::2].copy(), cls[::2, ::2].copy()
