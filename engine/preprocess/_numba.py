"""CPU path of hvx.preprocess: two numba passes, bit-exact with OpenCV.

Pass 1 (:func:`_tile_luts`), per tile: one read of the tile's RGB pixels
(BORDER_REFLECT_101 rows/columns where OpenCV pads) fills three histograms at
once, even and odd columns into separate copies (a run of equal pixels then
does not serialise on one counter's store-to-load forwarding); each merged
histogram is clipped, redistributed and turned into an OpenCV LUT, kept as
float32 (the interpolation's operand type). Pass 2 (:func:`_rows`), per row:
bilinear LUT interpolation of R, G, B (:func:`_interp3`, scalar: the LUT reads
are gathers), then HSV-S, YCrCb and the output scaling (:func:`_colour6`,
vectorised) straight into the six (N, C, H, W) output planes.

Exactness. The interpolation is float32 in OpenCV's operation order, never
fused (numba does not contract mul + add without fastmath), rounded half to
even like ``cvRound``. For power-of-two tiles (the usual 32 x 32 of a 256 tile
with an 8x8 grid, or ``tile_size=32``) every intermediate of that formula is
exact, and :func:`_interp3_exact` fuses multiplies into adds (same bits, half
the float operations). ``S`` computes OpenCV's ``SDIV[V]`` as a float32
division (equal for every V, pinned by a test) so the colour loop has no table
reads; it is compiled with its arrays marked ``noalias``
(:class:`_NoAliasCompiler`) so LLVM vectorises it without runtime overlap
checks. With mean/std the output goes through ``norm_table`` instead.
Indices are unsigned so numba emits no negative-index wraparound checks.

Inputs up to one 256x256 tile, or one numba thread, run on the calling thread
(:func:`_serial`); larger ones run pass 1 parallel over (image, tile row), then
pass 2 over (image, 16-row chunk) (:func:`_two_pass`).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import cgutils, compiler, types
from numba.extending import intrinsic

from hvx.preprocess._params import MAGIC, SDIV, ClaheGeometry, norm_table

__all__ = ["preprocess_numba"]

_ROWS = 16  # rows per task of the two-pass driver's second pass
_F05 = np.float32(0.5)
_F1 = np.float32(1.0)
_F255 = np.float32(255.0)
_F_SDIV = np.float32(255 << 12)
_FMAGIC = np.float32(MAGIC)


class _NoAliasCompiler(compiler.Compiler):
    """numba's default pipeline, with every pointer argument marked ``noalias``.

    Only for functions whose array arguments never overlap when one of them is
    written (:func:`_colour6`). Without the flag (an internal
    numba option) the code is the same, only not vectorised. Not for loops with
    indexed (LUT) reads: LLVM would turn them into gathers, which are slower
    than scalar loads on CPUs with the GDS microcode mitigation.
    """

    def define_pipelines(self):
        if hasattr(self.state.flags, "noalias"):
            self.state.flags.noalias = True
        return super().define_pipelines()


@intrinsic
def _lrint(typingctx, x):
    """int32 of float32 x rounded half to even (``cvtss2si``), 0 <= x < 2**22 here.

    Equal to OpenCV's ``cvRound`` and to ``(x + MAGIC) - MAGIC``, in one instruction.
    """
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [ir.FloatType()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.lrint.i32.f32")
        return builder.call(fn, args)

    return types.int32(types.float32), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """float32 ``a * b + c`` with one rounding (``vfmadd``); only where a * b is exact."""
    if not (a == b == c == types.float32):
        return None

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(f32, [f32, f32, f32]), "llvm.fma.f32"
        )
        return builder.call(fn, args)

    return types.float32(types.float32, types.float32, types.float32), codegen


@njit(cache=True, inline="always")
def _clip_to_lut(hist, clip, lut_scale, lut):
    """OpenCV's clip + redistribute + cumulative LUT of one 256-bin histogram.

    Written as simple loops LLVM vectorises; the cumulative sum goes into
    ``hist`` first, then one vector loop does OpenCV's float32 scaling.
    """
    excess = 0
    for i in range(256):
        d = hist[i] - clip
        excess += max(d, 0)
        hist[i] = min(hist[i], clip)
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
    for i in range(1, 256):
        hist[i] += hist[i - 1]
    for i in range(256):
        v = (np.float32(hist[i]) * lut_scale + _FMAGIC) - _FMAGIC  # cvRound: half to even
        lut[i] = np.float32(min(max(np.int32(v), 0), 255))


@njit(cache=True)
def _tile_luts(img, ymap, xmap3, ty, tx, tile_h, tile_w, clip, lut_scale, hist, lut):
    """R, G, B LUTs of tile (ty, tx) of one image.

    Args:
        img: ndarray[H, W * 3] uint8, the image's rows (RGB interleaved).
        ymap: ndarray[padded H] int32, source row of each padded row.
        xmap3: ndarray[padded W] uint32, 3 * source column of each padded column.
        ty: The tile's row in the grid.
        tx: The tile's column.
        tile_h: Tile height (padded plane).
        tile_w: Tile width.
        clip: ``ClaheGeometry.clip``.
        lut_scale: ``ClaheGeometry.lut_scale``.
        hist: ndarray[2, 3, 256] int32 scratch (even/odd columns).
        lut: ndarray[3 * tiles * 256] float32, the image's LUTs ([3, tiles, 256]
            flattened); those of tile ``t = ty * grid_x + tx`` are written.
    """
    n_tiles = (len(ymap) // tile_h) * (len(xmap3) // tile_w)
    t = ty * (len(xmap3) // tile_w) + tx
    x0 = tx * tile_w
    x1 = x0 + tile_w
    h = hist.ravel()  # [even R, G, B | odd R, G, B] x 256
    for i in range(1536):
        h[i] = 0
    inside = x1 <= img.shape[1] // 3  # no padded columns: read the row directly
    for py in range(ty * tile_h, (ty + 1) * tile_h):
        row = img[ymap[py]]
        px = x0
        while px + 1 < x1:
            if inside:
                p = np.uint32(3 * px)
                q = p + np.uint32(3)
            else:
                p = xmap3[px]
                q = xmap3[px + 1]
            h[np.uint32(row[p])] += 1
            h[np.uint32(256) + row[p + 1]] += 1
            h[np.uint32(512) + row[p + 2]] += 1
            h[np.uint32(768) + row[q]] += 1
            h[np.uint32(1024) + row[q + 1]] += 1
            h[np.uint32(1280) + row[q + 2]] += 1
            px += 2
        if px < x1:
            p = xmap3[px]
            h[np.uint32(row[p])] += 1
            h[np.uint32(256) + row[p + 1]] += 1
            h[np.uint32(512) + row[p + 2]] += 1
    for i in range(768):
        h[i] += h[i + 768]
    for c in range(3):
        _clip_to_lut(h[c * 256 :], clip, lut_scale, lut[(c * n_tiles + t) * 256 :])


@njit(cache=True)
def _x_weights(w, inv_tw, grid_x):
    """Per column: LUT offsets of the left/right tiles and OpenCV's float32 weights."""
    c1 = np.empty(w, dtype=np.uint32)
    c2 = np.empty(w, dtype=np.uint32)
    xa = np.empty(w, dtype=np.float32)
    xa1 = np.empty(w, dtype=np.float32)
    for x in range(w):
        txf = np.float32(x) * inv_tw - _F05
        tx1 = np.int64(np.floor(txf))
        xa[x] = txf - np.float32(tx1)
        xa1[x] = _F1 - xa[x]
        c1[x] = np.uint32(max(tx1, 0) * 256)
        c2[x] = np.uint32(min(tx1 + 1, grid_x - 1) * 256)
    return c1, c2, xa, xa1


@njit(cache=True, inline="always")
def _mix(lr1, lr2, j1, j2, a, a1, ya, ya1):
    """One channel of one pixel: OpenCV's bilinear LUT mix in its float32 order, rounded.

    ``j1``/``j2``: offsets of the left/right tile's LUT entry for the pixel's
    value (and channel plane) in the upper (``lr1``) and lower (``lr2``) rows.
    """
    top = lr1[j1] * a1 + lr1[j2] * a
    bot = lr2[j1] * a1 + lr2[j2] * a
    return _lrint(top * ya1 + bot * ya)


@njit(cache=True, inline="always")
def _mix_fma(lr1, lr2, j1, j2, a, a1, ya, ya1):
    """:func:`_mix` with each multiply fused into the following add (exact tiles only)."""
    top = _fma(lr1[j1], a1, lr1[j2] * a)
    bot = _fma(lr2[j1], a1, lr2[j2] * a)
    return _lrint(_fma(top, ya1, bot * ya))


@njit(cache=True)
def _interp3(src, lr1, lr2, plane, c1, c2, xa, xa1, ya, ya1, q):
    """CLAHE of one row: R, G, B LUT interpolation in OpenCV's float32 order.

    Scalar on purpose: vectorised, the 12 LUT reads per pixel become gathers,
    slower than scalar loads on CPUs with the gather (GDS) microcode fix.

    Args:
        src: ndarray[W * 3] uint8, the source row (RGB interleaved).
        lr1: ndarray float32, the image's LUTs (flattened [3, tiles, 256]) from
            the first LUT of the upper tile row on.
        lr2: Same, from the lower tile row on.
        plane: Offset between the R, G and B LUTs (tiles * 256).
        c1: ndarray[W] uint32, per column the LUT offset of the left tile.
        c2: Same, right tile.
        xa: ndarray[W] float32, OpenCV's weight of the right tile.
        xa1: Same, left tile.
        ya: OpenCV's float32 weight of the lower tile row.
        ya1: Same, upper tile row.
        q: ndarray[3, W] int32, the enhanced R, G, B row.
    """
    p1 = np.uint32(plane)
    p2 = np.uint32(2 * plane)
    r, g, b = q[0], q[1], q[2]
    for x in range(len(r)):
        s = np.uint32(3 * x)
        i1, i2, a, a1 = c1[x], c2[x], xa[x], xa1[x]
        k = np.uint32(src[s])
        r[x] = _mix(lr1, lr2, i1 + k, i2 + k, a, a1, ya, ya1)
        k = np.uint32(src[s + 1]) + p1
        g[x] = _mix(lr1, lr2, i1 + k, i2 + k, a, a1, ya, ya1)
        k = np.uint32(src[s + 2]) + p2
        b[x] = _mix(lr1, lr2, i1 + k, i2 + k, a, a1, ya, ya1)


@njit(cache=True)
def _interp3_exact(src, lr1, lr2, plane, c1, c2, xa, xa1, ya, ya1, q):
    """:func:`_interp3` for tiles of 2**m x 2**n pixels, m + n <= 16, with FMAs.

    There every weight is a multiple of 2**-m (x) or 2**-n (y) and every
    product and sum of OpenCV's formula is exact in float32 (LUT values are
    integers < 2**8, results < 2**8 with m + n fraction bits: at most 24
    bits), so fusing a multiply into the following add gives the same bits.
    """
    p1 = np.uint32(plane)
    p2 = np.uint32(2 * plane)
    r, g, b = q[0], q[1], q[2]
    for x in range(len(r)):
        s = np.uint32(3 * x)
        i1, i2, a, a1 = c1[x], c2[x], xa[x], xa1[x]
        k = np.uint32(src[s])
        r[x] = _mix_fma(lr1, lr2, i1 + k, i2 + k, a, a1, ya, ya1)
        k = np.uint32(src[s + 1]) + p1
        g[x] = _mix_fma(lr1, lr2, i1 + k, i2 + k, a, a1, ya, ya1)
        k = np.uint32(src[s + 2]) + p2
        b[x] = _mix_fma(lr1, lr2, i1 + k, i2 + k, a, a1, ya, ya1)


@njit(cache=True, pipeline_class=_NoAliasCompiler)
def _colour6(r, g, b, o0, o1, o2, o3, o4, o5):
    """B, G, R, S, Cr, Cb / 255 of one row (OpenCV's integer HSV and YCrCb).

    ``S`` uses ``cvRound(float32(255 << 12) / float32(V))``, equal to OpenCV's
    table ``SDIV[V]`` for every V >= 1 (tests pin it), so the loop has no
    table reads and vectorises.

    ``r, g, b``: ndarray[W] int32, the enhanced row; ``o0 .. o5``: ndarray[W]
    float32, the B, G, R, S, Cr, Cb output rows.
    """
    for x in range(len(r)):
        rr, gg, bb = r[x], g[x], b[x]
        vmax = max(rr, gg, bb)
        sdiv = np.int32((_F_SDIV / np.float32(max(vmax, 1)) + _FMAGIC) - _FMAGIC)
        sat = ((vmax - min(rr, gg, bb)) * sdiv + 2048) >> 12
        yy = (4899 * rr + 9617 * gg + 1868 * bb + 8192) >> 14
        cr = min(max(((rr - yy) * 11682 + 2105344) >> 14, 0), 255)  # (128 << 14) + 8192
        cb = min(max(((bb - yy) * 9241 + 2105344) >> 14, 0), 255)
        o0[x] = np.float32(bb) / _F255
        o1[x] = np.float32(gg) / _F255
        o2[x] = np.float32(rr) / _F255
        o3[x] = np.float32(sat) / _F255
        o4[x] = np.float32(cr) / _F255
        o5[x] = np.float32(cb) / _F255


@njit(cache=True)
def _colour6_table(r, g, b, sdiv, table, o0, o1, o2, o3, o4, o5):
    """:func:`_colour6` with the output through ``table[6, 256]`` (mean/std given)."""
    for x in range(len(r)):
        rr, gg, bb = r[x], g[x], b[x]
        vmax = max(rr, gg, bb)
        sat = ((vmax - min(rr, gg, bb)) * sdiv[np.uint32(vmax)] + 2048) >> 12
        yy = (4899 * rr + 9617 * gg + 1868 * bb + 8192) >> 14
        cr = min(max(((rr - yy) * 11682 + 2105344) >> 14, 0), 255)
        cb = min(max(((bb - yy) * 9241 + 2105344) >> 14, 0), 255)
        o0[x] = table[0, np.uint32(bb)]
        o1[x] = table[1, np.uint32(gg)]
        o2[x] = table[2, np.uint32(rr)]
        o3[x] = table[3, np.uint32(sat)]
        o4[x] = table[4, np.uint32(cr)]
        o5[x] = table[5, np.uint32(cb)]


@njit(cache=True)
def _row3(src, table, o0, o1, o2):
    """One output row of the "rgb" mode: src[W * 3] uint8 -> R, G, B rows o0..o2 [W] float32."""
    for x in range(len(o0)):
        s = np.uint32(3 * x)
        o0[x] = table[0, src[s]]
        o1[x] = table[1, src[s + 1]]
        o2[x] = table[2, src[s + 2]]


@njit(cache=True)
def _rows(img, lut, y0, y1, xw, grid_x, grid_y, inv_th, sdiv, table, six, scaled, exact, q, out):
    """Pass 2 for rows y0..y1 of one image.

    ``img``: ndarray[H, W * 3] uint8 RGB rows; ``lut``: ndarray[3 * tiles * 256]
    float32, the image's LUTs (6ch mode); ``xw``: :func:`_x_weights` of W; ``q``:
    ndarray[3, W] int32 scratch; ``out``: ndarray[C, H, W] float32, the image's
    output. ``six``: 6ch mode; ``scaled``: output plane / 255 (else ``table``);
    ``exact``: tiles where :func:`_interp3_exact` applies.
    """
    c1, c2, xa, xa1 = xw
    plane = lut.shape[0] // 3
    for y in range(y0, y1):
        src = img[y]
        if not six:
            _row3(src, table, out[0, y], out[1, y], out[2, y])
            continue
        tyf = np.float32(y) * inv_th - _F05
        ty1 = np.int64(np.floor(tyf))
        ya = tyf - np.float32(ty1)
        ya1 = _F1 - ya
        r1 = max(ty1, 0) * grid_x * 256
        r2 = min(ty1 + 1, grid_y - 1) * grid_x * 256
        if exact:
            _interp3_exact(src, lut[r1:], lut[r2:], plane, c1, c2, xa, xa1, ya, ya1, q)
        else:
            _interp3(src, lut[r1:], lut[r2:], plane, c1, c2, xa, xa1, ya, ya1, q)
        o0, o1, o2, o3, o4, o5 = out[0, y], out[1, y], out[2, y], out[3, y], out[4, y], out[5, y]
        if scaled:
            _colour6(q[0], q[1], q[2], o0, o1, o2, o3, o4, o5)
        else:
            _colour6_table(q[0], q[1], q[2], sdiv, table, o0, o1, o2, o3, o4, o5)


@njit(cache=True)
def _serial(batch, maps, geo, sdiv, table, six, scaled, exact, luts, out):
    """Both passes per image on the calling thread (tiny inputs, or one thread).

    There a parallel region's start and barrier cost more than the work (and,
    on an oversubscribed machine, can wait a whole scheduler time slice).
    """
    ymap, xmap3 = maps
    grid_x, grid_y, tile_h, tile_w, clip, lut_scale, inv_tw, inv_th = geo
    h, w = out.shape[2], out.shape[3]
    xw = _x_weights(w, inv_tw, grid_x)
    hist = np.empty((2, 3, 256), dtype=np.int32)
    q = np.empty((3, w), dtype=np.int32)
    for n in range(batch.shape[0]):
        img, lut = batch[n], luts[n]
        if six:
            for ty in range(grid_y):
                for tx in range(grid_x):
                    _tile_luts(img, ymap, xmap3, ty, tx, tile_h, tile_w, clip, lut_scale, hist, lut)
        _rows(
            img, lut, 0, h, xw, grid_x, grid_y, inv_th, sdiv, table, six, scaled, exact, q, out[n]
        )


@njit(parallel=True, cache=True)
def _two_pass(batch, maps, geo, sdiv, table, six, scaled, exact, luts, out):
    """Parallel over (image, tile row), then over (image, 16-row chunk)."""
    ymap, xmap3 = maps
    grid_x, grid_y, tile_h, tile_w, clip, lut_scale, inv_tw, inv_th = geo
    n_img, h, w = batch.shape[0], out.shape[2], out.shape[3]
    if six:
        for item in prange(n_img * grid_y):
            n = item // grid_y
            ty = item - n * grid_y
            hist = np.empty((2, 3, 256), dtype=np.int32)
            for tx in range(grid_x):
                _tile_luts(
                    batch[n], ymap, xmap3, ty, tx, tile_h, tile_w, clip, lut_scale, hist, luts[n]
                )
    xw = _x_weights(w, inv_tw, grid_x)
    chunks = (h + _ROWS - 1) // _ROWS
    for item in prange(n_img * chunks):
        n = item // chunks
        y0 = (item - n * chunks) * _ROWS
        y1 = min(y0 + _ROWS, h)
        q = np.empty((3, w), dtype=np.int32)
        _rows(
            batch[n], luts[n], y0, y1, xw, grid_x, grid_y, inv_th,
            sdiv, table, six, scaled, exact, q, out[n],
        )  # fmt: skip


_SERIAL_MAX_PIXELS = 1 << 16  # one 256 x 256 tile (~1 ms on one core)


def _exact_tiles(tile_w: int, tile_h: int) -> bool:
    """Whether tiles of tile_w x tile_h = 2**m x 2**n, m + n <= 16 (see :func:`_interp3_exact`)."""
    pow2 = all(t & (t - 1) == 0 for t in (tile_w, tile_h))
    return pow2 and (tile_w * tile_h).bit_length() - 1 <= 16


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
    luts = np.empty((n, 3 * (geo.n_tiles if six else 1) * 256), dtype=np.float32)
    g = (geo.grid_x, geo.grid_y, geo.tile_h, geo.tile_w, geo.clip, geo.lut_scale)
    g += (geo.inv_tw, geo.inv_th)
    ymap, xmap = geo.padded_to_source()
    maps = (ymap, (3 * xmap).astype(np.uint32))
    tiny = n * h * w <= _SERIAL_MAX_PIXELS or numba.get_num_threads() == 1
    run = _serial if tiny else _two_pass
    scaled = not config.normalised
    exact = _exact_tiles(geo.tile_w, geo.tile_h)
    run(batch.reshape(n, h, w * 3), maps, g, SDIV, table, six, scaled, exact, luts, out)
    return out
