"""CPU path of hvx.preprocess: two parallel numba passes, bit-exact with OpenCV.

Pass 1 (:func:`_clahe_luts`), parallel over (image, tile): one read of the
tile's RGB pixels (BORDER_REFLECT_101 rows/columns where OpenCV pads) fills
three histograms at once; each is clipped, redistributed and turned into an
OpenCV LUT, kept as float32 (the interpolation's operand type).
Pass 2 (:func:`_apply_rows`), parallel over (image, row): bilinear LUT
interpolation of R, G, B in float32 in OpenCV's operation order into a row
buffer, then HSV-S and YCrCb with OpenCV's integer formulas and the output
scaling, written straight into the (N, C, H, W) output.

All float arithmetic is float32 and never fused (numba does not contract
mul + add without fastmath), as in OpenCV's scalar CLAHE code. Indices are
unsigned so numba emits no negative-index wraparound checks in the hot loop.
Without mean/std the output is ``float32(v) / 255`` (one correctly rounded
division, equal to the normalisation table and vectorisable); with them it is
the table ``hvx.preprocess._params.norm_table``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hvx.preprocess._params import MAGIC, SDIV, ClaheGeometry, norm_table

__all__ = ["preprocess_numba"]

_F05 = np.float32(0.5)
_F1 = np.float32(1.0)
_F255 = np.float32(255.0)
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
        lut[i] = np.float32(min(max(np.int32(v), 0), 255))


@njit(parallel=True, cache=True)
def _clahe_luts(batch, ymap, xmap, grid_x, tile_h, tile_w, clip, lut_scale, luts):
    """Fills luts[N, 3, tiles, 256] float32 (integer values) from batch[N, H, W, 3] uint8."""
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
def _store(out, c, y, x, v, table, scaled):
    """out[c, y, x] = plane value v mapped to the output."""
    if scaled:
        out[c, y, x] = np.float32(v) / _F255
    else:
        out[c, y, x] = table[c, v]


@njit(parallel=True, cache=True)
def _apply_rows(batch, luts, grid_x, grid_y, inv_tw, inv_th, sdiv, table, six, scaled, out):
    """Writes out[N, C, H, W] float32 from batch[N, H, W, 3] uint8 and the float LUTs.

    ``scaled``: output = plane / 255 (no mean/std), else ``table[c, plane]``.
    """
    n_img, h, w = batch.shape[0], batch.shape[1], batch.shape[2]
    plane = np.uint64(luts.shape[2] * 256)  # offset between the R, G, B LUT planes
    c1 = np.empty(w, dtype=np.uint64)
    c2 = np.empty(w, dtype=np.uint64)
    xa = np.empty(w, dtype=np.float32)
    xa1 = np.empty(w, dtype=np.float32)
    for x in range(w):
        txf = np.float32(x) * inv_tw - _F05
        tx1 = np.int64(np.floor(txf))
        xa[x] = txf - np.float32(tx1)
        xa1[x] = _F1 - xa[x]
        c1[x] = np.uint64(max(tx1, 0) * 256)
        c2[x] = np.uint64(min(tx1 + 1, grid_x - 1) * 256)
    for item in prange(n_img * h):
        n = item // h
        y = item - n * h
        src = batch[n, y]
        o = out[n]
        if not six:
            for x in range(w):
                for c in range(3):
                    _store(o, c, y, x, src[x, c], table, scaled)
            continue
        tyf = np.float32(y) * inv_th - _F05
        ty1 = np.int64(np.floor(tyf))
        ya = tyf - np.float32(ty1)
        ya1 = _F1 - ya
        r1 = np.uint64(max(ty1, 0) * grid_x * 256)
        r2 = np.uint64(min(ty1 + 1, grid_y - 1) * grid_x * 256)
        lut = luts[n].ravel()
        q = np.empty((3, w), dtype=np.int32)
        for x in range(w):
            a, a1 = xa[x], xa1[x]
            o11, o12, o21, o22 = r1 + c1[x], r1 + c2[x], r2 + c1[x], r2 + c2[x]
            for c in range(3):
                v = np.uint64(src[x, c]) + np.uint64(c) * plane
                top = lut[o11 + v] * a1 + lut[o12 + v] * a
                bot = lut[o21 + v] * a1 + lut[o22 + v] * a
                res = top * ya1 + bot * ya  # OpenCV's order, float32
                q[c, x] = min(max(np.int32((res + _FMAGIC) - _FMAGIC), 0), 255)
        for x in range(w):
            r, g, b = q[0, x], q[1, x], q[2, x]
            vmax = max(r, g, b)
            s = ((vmax - min(r, g, b)) * sdiv[vmax] + 2048) >> 12
            yy = (4899 * r + 9617 * g + 1868 * b + 8192) >> 14
            cr = min(max(((r - yy) * 11682 + 2105344) >> 14, 0), 255)  # (128 << 14) + 8192
            cb = min(max(((b - yy) * 9241 + 2105344) >> 14, 0), 255)
            _store(o, 0, y, x, b, table, scaled)
            _store(o, 1, y, x, g, table, scaled)
            _store(o, 2, y, x, r, table, scaled)
            _store(o, 3, y, x, s, table, scaled)
            _store(o, 4, y, x, cr, table, scaled)
            _store(o, 5, y, x, cb, table, scaled)


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
    luts = np.empty((n, 3, geo.n_tiles, 256) if six else (1, 3, 1, 256), dtype=np.float32)
    if six:
        ymap, xmap = geo.padded_to_source()
        _clahe_luts(
            batch, ymap, xmap, geo.grid_x, geo.tile_h, geo.tile_w, geo.clip, geo.lut_scale, luts
        )
    scaled = not config.normalised
    _apply_rows(
        batch, luts, geo.grid_x, geo.grid_y, geo.inv_tw, geo.inv_th, SDIV, table, six, scaled, out
    )
    return out
