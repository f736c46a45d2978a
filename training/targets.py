"""Training targets for the three HoVer-Net branches: np, hv and tp (SPEC §2, §7f).

``make_targets`` turns one instance map and one class map into the arrays the
losses read. The horizontal/vertical (HV) map follows SPEC §2 exactly, with the
one departure of SPEC §7f: the reference expands each instance's bounding box by
2 pixels and slices with the expanded start, which goes negative for instances
whose box starts in row/column 0 or 1; Python slicing then wraps round (or is
empty) and those instances get no HV target at all. hvx clips the expanded box
to the image and keeps the reference's coordinate origin, so every instance gets
its proper HV values and everything else is bit-for-bit the reference's.

``gen_instance_hv_map_ref`` is the reference twin, quirk included, written
from SPEC §2 with plain NumPy/SciPy; tests compare the two to show that they
differ only on top/left border instances.

HV values of one instance (1-based aranges, ``int(c + 0.5)`` rounding of the
centre of mass, sides scaled separately)::

    x = (col - c0 + 3) - int(cx + 0.5)     # cx: centre of mass, relative to c0 - 2
    x[x < 0] /= -min(x[x < 0]);  x[x > 0] /= max(x[x > 0])       # float32

e.g. a 7-pixel-wide square gets x = -1, -0.5, 0, .25, .5, .75, 1 from left to
right: the zero column is one pixel left of the rounded centre.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "MIN_HV_SIZE",
    "fix_mirror_padding",
    "fix_mirror_padding_ref",
    "fix_mirror_padding_reference",
    "gen_instance_hv_map",
    "gen_instance_hv_map_ref",
    "gen_instance_hv_map_reference",
    "make_targets",
]

#: Instances with fewer pixels than this inside the crop get no HV target
#: (``skimage.morphology.remove_small_objects(min_size=30)`` before 0.26:
#: exactly 30 pixels is kept).
MIN_HV_SIZE = 30

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def _check_label_map(name: str, arr: Any) -> np.ndarray:
    """Validates a 2-D, non-negative integer label map and returns it as an ndarray."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name}: expected a numpy ndarray, got {type(arr).__name__}")
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (H, W) map, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise TypeError(f"{name}: expected an integer dtype, got {arr.dtype}")
    if arr.size and np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < 0:
        raise ValueError(f"{name}: expected non-negative labels, got minimum {arr.min()}")
    return arr


def _crop_slices(shape: tuple[int, int], crop_shape: tuple[int, int] | None) -> tuple[slice, ...]:
    """Slices of the centre crop (start ``int((H - h) * 0.5)``), the whole map for None."""
    if crop_shape is None:
        return (slice(None), slice(None))
    if len(crop_shape) != 2 or any(int(c) != c or c < 1 for c in crop_shape):
        raise ValueError(f"crop_shape: expected two positive ints, got {crop_shape!r}")
    h, w = (int(c) for c in crop_shape)
    if h > shape[0] or w > shape[1]:
        raise ValueError(f"crop_shape: expected at most the map size {shape}, got {(h, w)}")
    r0, c0 = int((shape[0] - h) * 0.5), int((shape[1] - w) * 0.5)
    return (slice(r0, r0 + h), slice(c0, c0 + w))


def fix_mirror_padding(ann: np.ndarray) -> np.ndarray:
    """Splits every instance made of several 4-connected pieces into separate ids.

    For each id in ascending order, its 4-connected components are numbered in
    raster order; component 1 keeps the id and component ``k > 1`` becomes
    ``k + current_max`` (``current_max`` = the largest id in the map, recomputed
    after each id). Same result as :func:`fix_mirror_padding_ref`, but
    labels each instance inside its bounding box only.

    Args:
        ann: ndarray[H, W] int, instance map (0 = background). Not modified.

    Returns:
        ndarray[H, W] int64, the fixed instance map.
    """
    ann = _check_label_map("ann", ann)
    out = ann.astype(np.int64, copy=True)
    if out.size == 0:
        return out
    ids, dense = _dense(out)
    current_max = int(ids[-1])
    for idx, box in enumerate(ndimage.find_objects(dense)):
        if box is None:
            continue
        window = out[box]
        pieces, n = ndimage.label(window == ids[idx + 1], structure=_FOUR_CONNECTED)
        if n > 1:
            extra = pieces > 1
            window[extra] = pieces[extra] + current_max
            current_max += n
    return out


def _dense(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabels to 1..K in ascending id order (0 stays background).

    Returns ``(ids, dense)``: ``ids[k]`` is the original id of dense label k
    (``ids[0] = 0``), ``dense`` is ndarray[H, W] int64. Keeps
    ``ndimage.find_objects`` small whatever the id values.
    """
    flat = labels.ravel()
    if int(flat.max()) <= max(4 * flat.size, 1 << 16):  # lookup table: O(pixels + ids)
        present = np.bincount(flat) > 0
        present[0] = True
        ids = np.flatnonzero(present)
        dense = (np.cumsum(present) - 1)[labels]
        return ids, dense
    ids, dense = np.unique(labels, return_inverse=True)  # huge ids: sort instead
    dense = dense.reshape(labels.shape)
    if ids[0] != 0:
        ids = np.concatenate([[0], ids])
        dense += 1
    return ids, dense


def fix_mirror_padding_ref(ann: np.ndarray) -> np.ndarray:
    """Reference twin of :func:`fix_mirror_padding`, literally as SPEC §2 states it.

    Args:
        ann: ndarray[H, W] int, instance map. Not modified.

    Returns:
        ndarray[H, W] int64.
    """
    ann = _check_label_map("ann", ann).astype(np.int64, copy=True)
    if ann.size == 0:
        return ann
    current_max = int(ann.max())
    for inst_id in np.unique(ann):
        if inst_id == 0:
            continue
        pieces = ndimage.label(ann == inst_id)[0]  # scipy default: 4-connectivity
        pieces[pieces > 1] += current_max
        ann[pieces > 1] = pieces[pieces > 1]
        current_max = int(ann.max())
    return ann


def _kept_labels(dense: np.ndarray, crop_shape: tuple[int, int] | None) -> np.ndarray:
    """Labels with at least MIN_HV_SIZE pixels inside the centre crop, ascending."""
    crop = dense[_crop_slices(dense.shape, crop_shape)]
    sizes = np.bincount(crop.ravel())
    sizes[0] = 0
    return np.flatnonzero(sizes >= MIN_HV_SIZE)


def gen_instance_hv_map(ann: np.ndarray, crop_shape: tuple[int, int] | None = None) -> np.ndarray:
    """HV map of every instance (SPEC §2 with the departure of SPEC §7f).

    Steps: :func:`fix_mirror_padding`; keep ids with >= 30 pixels inside the
    centre crop of ``crop_shape`` (whole map for None; kept ids still get HV
    values over their whole extent); per kept instance, offsets from the rounded
    centre of mass as in the module docstring, scaled per side.

    Unlike the reference, instances touching the top/left 2-pixel band get
    their HV values (the expanded box is clipped, not wrapped); the values are
    those the reference gives an interior instance of the same shape.

    Args:
        ann: ndarray[H, W] int, instance map (0 = background).
        crop_shape: (h, w) of the centre crop that decides the 30-pixel rule,
            or None for the whole map (input size = mask size, hvx's case).

    Returns:
        ndarray[H, W, 2] float32: channel 0 horizontal (x), 1 vertical (y), in
        [-1, 1], 0 on background and on instances with no target.
    """
    fixed = fix_mirror_padding(ann)
    height, width = fixed.shape
    hv = np.zeros((height, width, 2), np.float32)
    if fixed.size == 0:
        return hv
    _, fixed = _dense(fixed)  # instances are disjoint: their order does not matter
    n_labels = int(fixed.max()) + 1
    keep = np.zeros(n_labels, bool)
    keep[_kept_labels(fixed, crop_shape)] = True
    if height < 2 or width < 2:  # the reference skips crops under 2 pixels a side
        keep[:] = False
    lab = fixed.ravel()
    pix = np.flatnonzero(keep[lab])
    lab = lab[pix]
    rr, cc = np.divmod(pix, width)
    for axis, coord in ((0, cc), (1, rr)):
        hv[..., axis].flat[pix] = _axis_offsets(coord, lab, n_labels)
    return hv


def _axis_offsets(coord: np.ndarray, lab: np.ndarray, n_labels: int) -> np.ndarray:
    """Scaled HV offsets along one axis for the pixels of several instances.

    The centre of mass is taken relative to the reference's crop origin
    (box start - 2), with exact integer sums and one float64 division, so the
    rounding ``int(c + 0.5)`` and the float32 scaling are those of the reference.

    Args:
        coord: ndarray[P] int64, row or column of each pixel.
        lab: ndarray[P] int64, instance label of each pixel (1..n_labels-1).
        n_labels: 1 + the largest label.

    Returns:
        ndarray[P] float32 in [-1, 1].
    """
    start = np.full(n_labels, np.iinfo(np.int64).max)
    stop = np.full(n_labels, -1)
    np.minimum.at(start, lab, coord)
    np.maximum.at(stop, lab, coord)
    origin = start - 2
    count = np.bincount(lab, minlength=n_labels)
    total = np.bincount(lab, weights=coord, minlength=n_labels)  # exact: integers < 2**53
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = np.floor((total - count * origin) / count + 0.5)
    # reference: offset = (coord - origin + 1) - int(c_rel + 0.5) = coord - zero
    zero = (origin - 1 + np.nan_to_num(centre).astype(np.int64))[lab]
    offset = (coord - zero).astype(np.float32)
    neg_scale = (zero - start[lab]).astype(np.float32)  # -min(offset) over the instance
    pos_scale = (stop[lab] - zero).astype(np.float32)  # max(offset) over the instance
    neg, pos = offset < 0, offset > 0
    offset[neg] /= neg_scale[neg]
    offset[pos] /= pos_scale[pos]
    return offset


def gen_instance_hv_map_ref(
    ann: np.ndarray, crop_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Reference twin: SPEC §2 ``gen_instance_hv_map``, top/left quirk included.

    The bounding box (max exclusive) is expanded by 2 pixels and used as a
    Python slice as is: a negative start wraps round, so an instance whose box
    starts in row/column 0 or 1 gets no HV (empty crop) or, if it spans nearly
    the whole height/width, values in the last two rows/columns only.
    Where the wrapped crop holds no pixel of the instance (box from row 0 to
    row H-3 or H-2), the original code would fail on a NaN centre of mass;
    this twin skips the instance instead.

    Args:
        ann: ndarray[H, W] int, instance map.
        crop_shape: (h, w) of the centre crop for the 30-pixel rule, or None.

    Returns:
        ndarray[H, W, 2] float32, channel 0 x, channel 1 y.
    """
    fixed = fix_mirror_padding_ref(ann)
    crop = fixed[_crop_slices(fixed.shape, crop_shape)].copy()
    if crop.size:
        _, where, sizes = np.unique(crop, return_inverse=True, return_counts=True)
        crop[sizes[where.reshape(crop.shape)] < MIN_HV_SIZE] = 0  # remove_small_objects(30)
    x_map = np.zeros(fixed.shape, np.float32)
    y_map = np.zeros(fixed.shape, np.float32)
    for inst_id in np.unique(crop):
        if inst_id == 0:
            continue
        full = (fixed == inst_id).astype(np.uint8)
        any_r, any_c = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
        r0, r1 = int(any_r[0]) - 2, int(any_r[-1]) + 1 + 2
        c0, c1 = int(any_c[0]) - 2, int(any_c[-1]) + 1 + 2
        m = full[r0:r1, c0:c1]
        if m.shape[0] < 2 or m.shape[1] < 2 or not m.any():
            continue
        cy, cx = ndimage.center_of_mass(m)
        cy, cx = int(cy + 0.5), int(cx + 0.5)
        xr = np.arange(1, m.shape[1] + 1) - cx
        yr = np.arange(1, m.shape[0] + 1) - cy
        x, y = np.meshgrid(xr, yr)
        x[m == 0] = 0
        y[m == 0] = 0
        x, y = x.astype(np.float32), y.astype(np.float32)
        for v in (x, y):
            if (v < 0).any():
                v[v < 0] /= -np.amin(v[v < 0])
            if (v > 0).any():
                v[v > 0] /= np.amax(v[v > 0])
        x_map[r0:r1, c0:c1][m > 0] = x[m > 0]
        y_map[r0:r1, c0:c1][m > 0] = y[m > 0]
    return np.dstack([x_map, y_map])


# The twins' former names (before hvx's one convention for reference twins,
# ``foo`` -> ``foo_ref``: #21 item 8), kept so existing callers keep working.
fix_mirror_padding_reference = fix_mirror_padding_ref
gen_instance_hv_map_reference = gen_instance_hv_map_ref


def make_targets(
    inst: np.ndarray, cls: np.ndarray, *, crop_shape: tuple[int, int] | None = None
) -> dict[str, np.ndarray]:
    """The np, hv and tp targets of one tile (SPEC §2, §7f; input size = mask size).

    Args:
        inst: ndarray[H, W] int, instance map (0 = background; ids need not be
            contiguous).
        cls: ndarray[H, W] int, class map (0 = background, raw class ids).
        crop_shape: centre crop deciding the 30-pixel HV rule (None: whole tile).

    Returns:
        ``{"np": ndarray[H, W] int64 (0/1), "hv": ndarray[2, H, W] float32
        (channel 0 horizontal, 1 vertical), "tp": ndarray[H, W] int64}``.
    """
    inst = _check_label_map("inst", inst)
    cls = _check_label_map("cls", cls)
    if inst.shape != cls.shape:
        raise ValueError(f"cls: expected the shape of inst {inst.shape}, got {cls.shape}")
    hv = gen_instance_hv_map(inst, crop_shape)
    return {
        "np": (inst > 0).astype(np.int64),
        "hv": np.ascontiguousarray(hv.transpose(2, 0, 1)),
        "tp": cls.astype(np.int64),
    }
