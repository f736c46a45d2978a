"""CPU path of hvx.preprocess: two parallel numba passes, bit-exact with OpenCV.

Pass 1 (:func:`_tile_luts`), per tile: one read of the tile's RGB pixels
(BORDER_REFLECT_101 rows/columns where OpenCV pads) fills three histograms at
once; each is clipped, redistributed and turned into an OpenCV LUT, kept as
float32 (the interpolation's operand type). Pass 2 (:func:`_row`), per row:
bilinear LUT interpolation of R, G, B in float32 in OpenCV's operation order
into a row buffer, then HSV-S and YCrCb with OpenCV's integer formulas and the
output scaling, written straight into the (N, C, H, W) output.

Inputs up to one 256x256 tile run on the calling thread (:func:`_serial`);
larger ones run pass 1 parallel over (image, tile), then pass 2 over (image,
16-row chunk) (:func:`_two_pass`).

All float arithmetic is float32 and never fused (numba does not contract
mul + add without fastmath), as in OpenCV's scalar CLAHE code. Indices are
unsigned so numba emits no negative-index wraparound checks in the hot loop.
Without mean/std the output is ``float32(v) / 255`` (one correctly rounded
division, equal to the normalisation table and vectorisable); with them it is
the table ``hvx.preprocess._params.norm_table``.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from hvx.preprocess._params import MAGIC, SDIV, ClaheGeometry, norm_table

__all__ = ["preprocess_numba"]

_ROWS = 16  # rows per task of the two-pass driver's second pass
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


@njit(cache=True)
def _tile_luts(img, ymap, xmap, grid_x, tile_h, tile_w, clip, lut_scale, t, luts):
    """R, G, B LUTs of tile t of img[H, W, 3] uint8 into luts[3, tiles, 256] float32."""
    ty = t // grid_x
    x0 = (t - ty * grid_x) * tile_w
    hist = np.zeros((3, 256), dtype=np.int32)
    for py in range(ty * tile_h, (ty + 1) * tile_h):
        row = img[ymap[py]]
        for px in range(x0, x0 + tile_w):
            pix = row[xmap[px]]
            hist[0, pix[0]] += 1
            hist[1, pix[1]] += 1
            hist[2, pix[2]] += 1
    for c in range(3):
        _clip_to_lut(hist[c], clip, lut_scale, luts[c, t])


@njit(cache=True)
def _x_weights(w, inv_tw, grid_x):
    """Per column: LUT offsets of the left/right tiles and OpenCV's float32 weights."""
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
    return c1, c2, xa, xa1


@njit(cache=True, inline="always")
def _store(out, c, y, x, v, table, scaled):
    """out[c, y, x] = plane value v mapped to the output."""
    if scaled:
        out[c, y, x] = np.float32(v) / _F255
    else:
        out[c, y, x] = table[c, v]


@njit(cache=True)
def _row(src, luts, y, xw, grid_x, grid_y, inv_th, sdiv, table, six, scaled, q, out):
    """Output row y of one image: src[W, 3] uint8 -> out[C, y, :] (q: int32[3, W] scratch)."""
    w = src.shape[0]
    if not six:
        for x in range(w):
            for c in range(3):
                _store(out, c, y, x, src[x, c], table, scaled)
        return
    c1, c2, xa, xa1 = xw
    plane = np.uint64(luts.shape[1] * 256)  # offset between the R, G, B LUT planes
    tyf = np.float32(y) * inv_th - _F05
    ty1 = np.int64(np.floor(tyf))
    ya = tyf - np.float32(ty1)
    ya1 = _F1 - ya
    r1 = np.uint64(max(ty1, 0) * grid_x * 256)
    r2 = np.uint64(min(ty1 + 1, grid_y - 1) * grid_x * 256)
    lut = luts.ravel()
    for c in range(3):
        lr1 = lut[np.uint64(c) * plane + r1 :]
        lr2 = lut[np.uint64(c) * plane + r2 :]
        qc = q[c]
        for x in range(w):
            v = np.uint64(src[x, c])
            i1, i2 = c1[x] + v, c2[x] + v
            a, a1 = xa[x], xa1[x]
            top = lr1[i1] * a1 + lr1[i2] * a
            bot = lr2[i1] * a1 + lr2[i2] * a
            res = top * ya1 + bot * ya  # OpenCV's order, float32; a convex mix of 0..255
            qc[x] = np.int32((res + _FMAGIC) - _FMAGIC)
    for x in range(w):  # integer colour stage: vectorised by LLVM
        r, g, b = q[0, x], q[1, x], q[2, x]
        vmax = max(r, g, b)
        s = ((vmax - min(r, g, b)) * sdiv[vmax] + 2048) >> 12
        yy = (4899 * r + 9617 * g + 1868 * b + 8192) >> 14
        cr = min(max(((r - yy) * 11682 + 2105344) >> 14, 0), 255)  # (128 << 14) + 8192
        cb = min(max(((b - yy) * 9241 + 2105344) >> 14, 0), 255)
        _store(out, 0, y, x, b, table, scaled)
        _store(out, 1, y, x, g, table, scaled)
        _store(out, 2, y, x, r, table, scaled)
        _store(out, 3, y, x, s, table, scaled)
        _store(out, 4, y, x, cr, table, scaled)
        _store(out, 5, y, x, cb, table, scaled)


@njit(cache=True)
def _serial(batch, maps, geo, sdiv, table, six, scaled, luts, out):
    """Both passes per image on the calling thread (tiny inputs).

    There a parallel region's start and barrier cost more than the work (and,
    on an oversubscribed machine, can wait a whole scheduler time slice).
    """
    ymap, xmap = maps
    grid_x, grid_y, tile_h, tile_w, clip, lut_scale, inv_tw, inv_th = geo
    h, w = batch.shape[1], batch.shape[2]
    xw = _x_weights(w, inv_tw, grid_x)
    q = np.empty((3, w), dtype=np.int32)
    for n in range(batch.shape[0]):
        img, lut, o = batch[n], luts[n], out[n]
        if six:
            for t in range(luts.shape[2]):
                _tile_luts(img, ymap, xmap, grid_x, tile_h, tile_w, clip, lut_scale, t, lut)
        for y in range(h):
            _row(img[y], lut, y, xw, grid_x, grid_y, inv_th, sdiv, table, six, scaled, q, o)


@njit(parallel=True, cache=True)
def _two_pass(batch, maps, geo, sdiv, table, six, scaled, luts, out):
    """Parallel over (image, tile), then over (image, 16-row chunk)."""
    ymap, xmap = maps
    grid_x, grid_y, tile_h, tile_w, clip, lut_scale, inv_tw, inv_th = geo
    n_img, h, w = batch.shape[0], batch.shape[1], batch.shape[2]
    n_tiles = luts.shape[2]
    if six:
        for item in prange(n_img * n_tiles):
            n = item // n_tiles
            t = item - n * n_tiles
            _tile_luts(batch[n], ymap, xmap, grid_x, tile_h, tile_w, clip, lut_scale, t, luts[n])
    xw = _x_weights(w, inv_tw, grid_x)
    chunks = (h + _ROWS - 1) // _ROWS
    for item in prange(n_img * chunks):
        n = item // chunks
        y0 = (item - n * chunks) * _ROWS
        q = np.empty((3, w), dtype=np.int32)
        img, lut, o = batch[n], luts[n], out[n]
        for y in range(y0, min(y0 + _ROWS, h)):
            _row(img[y], lut, y, xw, grid_x, grid_y, inv_th, sdiv, table, six, scaled, q, o)


_SERIAL_MAX_PIXELS = 1 << 16  # one 256 x 256 tile (~2 ms on one core)


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
    six = config.mode == "6ch"
    geo = ClaheGeometry.create(h, w, config.tile_grid, config.clip_limit, config.tile_size)
    table = norm_table(c, config.mean, config.std)
    out = np.empty((n, c, h, w), dtype=np.float32)
    luts = np.empty((n, 3, geo.n_tiles if six else 1, 256), dtype=np.float32)
    g = (geo.grid_x, geo.grid_y, geo.tile_h, geo.tile_w, geo.clip, geo.lut_scale)
    g += (geo.inv_tw, geo.inv_th)
    tiny = n * h * w <= _SERIAL_MAX_PIXELS or numba.get_num_threads() == 1
    run = _serial if tiny else _two_pass
    run(batch, geo.padded_to_source(), g, SDIV, table, six, not config.normalised, luts, out)
    return out
