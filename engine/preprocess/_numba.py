"""CPU path of hvx.preprocess: two parallel numba passes, bit-exact with OpenCV.

Pass 1 (:func:`_clahe_luts`), parallel over (image, tile): one read of the
tile's RGB pixels (BORDER_REFLECT_101 rows/columns where OpenCV pads) fills
three histograms at once; each is clipped, redistributed and turned into an
OpenCV LUT. Pass 2 (:func:`_apply_rows`), parallel over (image, row): bilinear
LUT interpolation of R, G, B in float32 in OpenCV's operation order, then
HSV-S and YCrCb with OpenCV's integer formulas, then the per-channel
normalisation table, written straight into the (N, C, H, W) output.
All float arithmetic is float32 and never fused (numba does not contract
mul + add without fastmath), as in OpenCV's scalar CLAHE code.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hvx.preprocess._params import MAGIC, SDIV, ClaheGeometry, norm_table

__all__ = ["preprocess_numba"]

_F0 = np.float32(0.0)
_F05 = np.float32(0.5)
_F1 = np.float32(1.0)
_FMAGIC = np.float32(MAGIC)


@njit(cache=True, inline="always")
def _clip_to_lut(hist, clip, lut_scale, lut):
    """OpenCV's clip + redistribute + cumulative LUT of one 256-bin histogram."""
    excess = 0
    for i in range(256):
        if hist[i] > clip:
            excess += hist[i] - clip
            hist[i] = clip
    batch = excess // 256
    residual = excess - batch * 256
    for i in range(256):
        hist[i] += batch
    if residual != 0:
        step = max(256 // residual, 1)
        i = 0
        while i < 256 and residual > 0:
            hist[i] += 1
            i += step
            residual -= 1
    acc = 0
    for i in range(256):
        acc += hist[i]
        v = (np.float32(acc) * lut_scale + _FMAGIC) - _FMAGIC
        lut[i] = min(max(np.int32(v), 0), 255)


@njit(parallel=True, cache=True)
def _clahe_luts(batch, ymap, xmap, grid_x, tile_h, tile_w, clip, lut_scale, luts):
    """Fills luts[N, 3, tiles, 256] uint8 from batch[N, H, W, 3] uint8."""
    n_img, n_tiles = luts.shape[0], luts.shape[2]
    for item in prange(n_img * n_tiles):
        n = item // n_tiles
        t = item - n * n_tiles
        ty = t // grid_x
        tx = t - ty * grid_x
        hist = np.zeros((3, 256), dtype=np.int32)
        x0 = tx * tile_w
        for py in range(ty * tile_h, (ty + 1) * tile_h):
            row = batch[n, ymap[py]]
            for px in range(x0, x0 + tile_w):
                pix = row[xmap[px]]
                hist[0, pix[0]] += 1
                hist[1, pix[1]] += 1
                hist[2, pix[2]] += 1
        for c in range(3):
            _clip_to_lut(hist[c], clip, lut_scale, luts[n, c, t])


@njit(cache=True, inline="always")
def _interp(lut, o11, o12, o21, o22, xa, xa1, ya, ya1):
    """OpenCV: ``(L11*xa1 + L12*xa)*ya1 + (L21*xa1 + L22*xa)*ya``, rounded, in float32.

    ``lut`` is one image's flat uint8 LUTs; ``o..`` are offsets of the four
    tile LUT entries (tile * 256 + value, plus the channel's offset).
    """
    top = np.float32(lut[o11]) * xa1 + np.float32(lut[o12]) * xa
    bot = np.float32(lut[o21]) * xa1 + np.float32(lut[o22]) * xa
    res = top * ya1 + bot * ya
    return min(max(np.int32((res + _FMAGIC) - _FMAGIC), 0), 255)


@njit(parallel=True, cache=True)
def _apply_rows(batch, luts, grid_x, grid_y, inv_tw, inv_th, sdiv, table, six, out):
    """Writes out[N, C, H, W] float32 from batch[N, H, W, 3] uint8 and the LUTs."""
    n_img, h, w = batch.shape[0], batch.shape[1], batch.shape[2]
    ind1 = np.empty(w, dtype=np.int32)
    ind2 = np.empty(w, dtype=np.int32)
    xa = np.empty(w, dtype=np.float32)
    xa1 = np.empty(w, dtype=np.float32)
    for x in range(w):
        txf = np.float32(x) * inv_tw - _F05
        tx1 = np.int32(np.floor(txf))
        xa[x] = txf - np.float32(tx1)
        xa1[x] = _F1 - xa[x]
        ind1[x] = max(tx1, 0)
        ind2[x] = min(tx1 + 1, grid_x - 1)
    for item in prange(n_img * h):
        n = item // h
        y = item - n * h
        src = batch[n, y]
        if six:
            _six_row(
                src, luts[n], grid_x, grid_y, inv_th, y, ind1, ind2, xa, xa1, sdiv, table, out[n]
            )
        else:
            for x in range(w):
                for c in range(3):
                    out[n, c, y, x] = table[c, src[x, c]]


@njit(cache=True)
def _six_row(src, luts, grid_x, grid_y, inv_th, y, ind1, ind2, xa, xa1, sdiv, table, out):
    """One output row of the 6-channel mode: src[W, 3] -> out[6, y, :]."""
    tyf = np.float32(y) * inv_th - _F05
    ty1 = np.int32(np.floor(tyf))
    ya = tyf - np.float32(ty1)
    ya1 = _F1 - ya
    row1 = max(ty1, 0) * grid_x
    row2 = min(ty1 + 1, grid_y - 1) * grid_x
    lut = luts.ravel()
    plane = luts.shape[1] * 256  # offset between the R, G, B LUT planes
    r1, r2 = row1 * 256, row2 * 256
    for x in range(src.shape[0]):
        a, a1 = xa[x], xa1[x]
        c1, c2 = ind1[x] * 256, ind2[x] * 256
        v = np.intp(src[x, 0])
        r = _interp(lut, r1 + c1 + v, r1 + c2 + v, r2 + c1 + v, r2 + c2 + v, a, a1, ya, ya1)
        v = np.intp(src[x, 1]) + plane
        g = _interp(lut, r1 + c1 + v, r1 + c2 + v, r2 + c1 + v, r2 + c2 + v, a, a1, ya, ya1)
        v = np.intp(src[x, 2]) + 2 * plane
        b = _interp(lut, r1 + c1 + v, r1 + c2 + v, r2 + c1 + v, r2 + c2 + v, a, a1, ya, ya1)
        vmax = max(r, g, b)
        s = ((vmax - min(r, g, b)) * sdiv[vmax] + 2048) >> 12
        yy = (4899 * r + 9617 * g + 1868 * b + 8192) >> 14
        cr = min(max(((r - yy) * 11682 + 2105344) >> 14, 0), 255)  # 2105344 = (128<<14)+8192
        cb = min(max(((b - yy) * 9241 + 2105344) >> 14, 0), 255)
        out[0, y, x] = table[0, b]
        out[1, y, x] = table[1, g]
        out[2, y, x] = table[2, r]
        out[3, y, x] = table[3, s]
        out[4, y, x] = table[4, cr]
        out[5, y, x] = table[5, cb]


def preprocess_numba(batch: np.ndarray, config) -> np.ndarray:
    """Runs both passes.

    Args:
        batch: ndarray[N, H, W, 3] uint8 RGB, C-contiguous, N, H, W >= 1.
        config: A validated :class:`hvx.preprocess.PreprocessConfig`.

    Returns:
        ndarray[N, C, H, W] float32, C = ``config.in_chans``.
    """
    n, h, w, _ = batch.shape
    c = config.in_chans
    table = norm_table(c, config.mean, config.std)
    out = np.empty((n, c, h, w), dtype=np.float32)
    six = config.mode == "6ch"
    geo = ClaheGeometry.create(h, w, config.tile_grid, config.clip_limit)
    luts = np.empty((n, 3, geo.n_tiles, 256), dtype=np.uint8)
    if six:
        ymap, xmap = geo.padded_to_source()
        _clahe_luts(
            batch, ymap, xmap, geo.grid_x, geo.tile_h, geo.tile_w, geo.clip, geo.lut_scale, luts
        )
    _apply_rows(batch, luts, geo.grid_x, geo.grid_y, geo.inv_tw, geo.inv_th, SDIV, table, six, out)
    return out
