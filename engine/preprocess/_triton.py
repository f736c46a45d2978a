"""GPU path of hvx.preprocess: a Triton kernel pair behind ``torch.ops.hvx.clahe_stack``.

``_clahe_lut_kernel`` builds, per (image, tile), the R, G, B histograms of the
tile (BORDER_REFLECT_101 where OpenCV pads), clips and redistributes them and
writes OpenCV's uint8 LUTs. ``_clahe_apply_kernel`` then reads each pixel once,
interpolates its three LUT values in float32 in OpenCV's order, derives HSV-S
and YCrCb-Cr/Cb with OpenCV's integer formulas and writes the final, normalised
(N, C, H, W) tensor. Float products go through ``mul_rn`` on the GPU (and the
kernels launch with ``enable_fp_fusion=False``) so no FMA changes a rounding.

The same kernels run on the CPU under ``TRITON_INTERPRET=1``, where the cost is
per program: there, one program covers a whole image (``TPP`` tiles at once in
one ``TPP * 256``-bin histogram), on the GPU one program per tile / pixel block.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton
from triton.language.extra import libdevice

__all__ = ["clahe_stack"]

_MAGIC = 12582912.0  # (x + 1.5 * 2**23) - 1.5 * 2**23 rounds half to even (cvRound)
_INTERP_BLOCK = 1 << 16  # elements per vector op in the interpreter
_GPU_BLOCK = 1024  # pixels per program of the apply kernel on the GPU
_GPU_PIX = 1024  # pixels per histogram step of the LUT kernel on the GPU


@triton.jit
def _mul(a, b, RN: tl.constexpr):
    """``a * b`` rounded on its own (never contracted into an FMA)."""
    if RN:
        return libdevice.mul_rn(a, b)
    else:
        return a * b


@triton.jit
def _reflect101(p, n):
    """OpenCV BORDER_REFLECT_101 of padded coordinates p >= 0 into [0, n)."""
    period = tl.maximum(2 * (n - 1), 1)
    q = p % period
    return tl.where(q < n, q, period - q)


@triton.jit
def _hist_to_lut(hist, lut_ptrs, mask, CLIP, LUT_SCALE, TPP: tl.constexpr, RN: tl.constexpr):
    """Clip, redistribute and integrate TPP histograms ([TPP*256] int32) into LUTs."""
    h = tl.reshape(hist, (TPP, 256))
    excess = tl.sum(tl.maximum(h - CLIP, 0), axis=1)
    h = tl.minimum(h, CLIP) + (excess // 256)[:, None]
    residual = (excess % 256)[:, None]
    step = tl.maximum(256 // tl.maximum(residual, 1), 1)
    i = tl.arange(0, 256)[None, :]
    h += ((residual > 0) & (i % step == 0) & (i // step < residual)).to(tl.int32)
    v = _mul(tl.cumsum(h, axis=1).to(tl.float32), LUT_SCALE, RN)
    v = (v + 12582912.0) - 12582912.0
    tl.store(lut_ptrs, tl.minimum(tl.maximum(v.to(tl.int32), 0), 255).to(tl.uint8), mask=mask)


@triton.jit
def _clahe_lut_kernel(
    # pointers: x[N, H, W, 3] uint8 (any strides), lut[N, 3, N_TILES, 256] uint8
    x_ptr,
    lut_ptr,
    # input strides, in elements
    stride_n,
    stride_h,
    stride_w,
    stride_c,
    # geometry (see hvx.preprocess._params.ClaheGeometry)
    H,
    W,
    GRID_X,
    N_TILES,
    TILE_H,
    TILE_W,
    CLIP,
    LUT_SCALE,
    # meta: tiles per program, pixels per tile and step, exact float products
    TPP: tl.constexpr,
    PIX: tl.constexpr,
    RN: tl.constexpr,
):
    """One program: TPP tiles of one image, all three channels."""
    n = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, TPP * PIX)
    t_loc = offs // PIX
    t = tl.program_id(1) * TPP + t_loc
    tile_ok = t < N_TILES
    ty = t // GRID_X
    tx = t - ty * GRID_X
    area = TILE_H * TILE_W
    bins = t_loc * 256
    hist_r = tl.zeros([TPP * 256], dtype=tl.int32)
    hist_g = tl.zeros([TPP * 256], dtype=tl.int32)
    hist_b = tl.zeros([TPP * 256], dtype=tl.int32)
    base = x_ptr + n * stride_n
    for k in range(0, area, PIX):
        p = k + offs % PIX
        m = tile_ok & (p < area)
        py = p // TILE_W
        sy = _reflect101(ty * TILE_H + py, H)
        sx = _reflect101(tx * TILE_W + (p - py * TILE_W), W)
        ptr = base + sy.to(tl.int64) * stride_h + sx.to(tl.int64) * stride_w
        hist_r += tl.histogram(bins + tl.load(ptr, mask=m, other=0).to(tl.int32), TPP * 256, m)
        ptr += stride_c
        hist_g += tl.histogram(bins + tl.load(ptr, mask=m, other=0).to(tl.int32), TPP * 256, m)
        ptr += stride_c
        hist_b += tl.histogram(bins + tl.load(ptr, mask=m, other=0).to(tl.int32), TPP * 256, m)
    t2 = tl.program_id(1) * TPP + tl.arange(0, TPP)[:, None]
    i2 = tl.arange(0, 256)[None, :]
    lut = lut_ptr + (n * 3 * N_TILES + t2) * 256 + i2
    m2 = (t2 < N_TILES) & (i2 < 256)
    # float32 explicitly: torch.compile types a Python float argument float64, and
    # libdevice.mul_rn has no (float32, float64) form (the value is float32-exact)
    scale = tl.cast(LUT_SCALE, tl.float32)
    _hist_to_lut(hist_r, lut, m2, CLIP, scale, TPP, RN)
    _hist_to_lut(hist_g, lut + N_TILES * 256, m2, CLIP, scale, TPP, RN)
    _hist_to_lut(hist_b, lut + 2 * N_TILES * 256, m2, CLIP, scale, TPP, RN)


@triton.jit
def _interp(lut_ptr, v, o11, o12, o21, o22, xa, xa1, ya, ya1, m, RN: tl.constexpr):
    """OpenCV: ``rint((L11*xa1 + L12*xa)*ya1 + (L21*xa1 + L22*xa)*ya)`` in float32."""
    l11 = tl.load(lut_ptr + o11 + v, mask=m, other=0).to(tl.float32)
    l12 = tl.load(lut_ptr + o12 + v, mask=m, other=0).to(tl.float32)
    l21 = tl.load(lut_ptr + o21 + v, mask=m, other=0).to(tl.float32)
    l22 = tl.load(lut_ptr + o22 + v, mask=m, other=0).to(tl.float32)
    top = _mul(l11, xa1, RN) + _mul(l12, xa, RN)
    bot = _mul(l21, xa1, RN) + _mul(l22, xa, RN)
    res = _mul(top, ya1, RN) + _mul(bot, ya, RN)
    res = (res + 12582912.0) - 12582912.0
    return tl.minimum(tl.maximum(res.to(tl.int32), 0), 255)


@triton.jit
def _store_plane(out_ptr, table_ptr, c, v, plane, m):
    """out[c] = table[c, v] (float32), cast to the output dtype."""
    val = tl.load(table_ptr + c * 256 + v, mask=m, other=0.0)
    tl.store(out_ptr + c * plane, val.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _clahe_apply_kernel(
    # pointers: x[N, H, W, 3] uint8, lut[N, 3, N_TILES, 256] uint8,
    # table[C, 256] float32, sdiv[256] int32, out[N, C, H, W] (contiguous)
    x_ptr,
    lut_ptr,
    table_ptr,
    sdiv_ptr,
    out_ptr,
    # input strides, in elements
    stride_n,
    stride_h,
    stride_w,
    stride_c,
    # geometry
    H,
    W,
    GRID_X,
    GRID_Y,
    N_TILES,
    INV_TW,
    INV_TH,
    BLOCKS_PER_PROG,
    # meta: pixels per step, "6ch" (else "rgb"), exact float products
    BLOCK: tl.constexpr,
    SIX: tl.constexpr,
    RN: tl.constexpr,
):
    """One program: BLOCKS_PER_PROG blocks of BLOCK pixels of one image."""
    n = tl.program_id(0).to(tl.int64)
    plane = H * W
    x_img = x_ptr + n * stride_n
    out_img = out_ptr + n * (6 if SIX else 3) * plane
    lut_img = lut_ptr + n * 3 * N_TILES * 256
    inv_tw = tl.cast(INV_TW, tl.float32)  # float64 under torch.compile (see the LUT kernel)
    inv_th = tl.cast(INV_TH, tl.float32)
    for k in range(0, BLOCKS_PER_PROG):
        idx = (tl.program_id(1) * BLOCKS_PER_PROG + k) * BLOCK + tl.arange(0, BLOCK)
        m = idx < plane
        y = idx // W
        x = idx - y * W
        src = x_img + y.to(tl.int64) * stride_h + x.to(tl.int64) * stride_w
        r = tl.load(src, mask=m, other=0).to(tl.int32)
        g = tl.load(src + stride_c, mask=m, other=0).to(tl.int32)
        b = tl.load(src + 2 * stride_c, mask=m, other=0).to(tl.int32)
        out = out_img + idx
        if SIX:
            txf = _mul(x.to(tl.float32), inv_tw, RN) - 0.5
            tx1 = tl.floor(txf).to(tl.int32)
            xa = txf - tx1.to(tl.float32)
            xa1 = 1.0 - xa
            tyf = _mul(y.to(tl.float32), inv_th, RN) - 0.5
            ty1 = tl.floor(tyf).to(tl.int32)
            ya = tyf - ty1.to(tl.float32)
            ya1 = 1.0 - ya
            c1 = tl.maximum(tx1, 0) * 256
            c2 = tl.minimum(tx1 + 1, GRID_X - 1) * 256
            r1 = tl.maximum(ty1, 0) * GRID_X * 256
            r2 = tl.minimum(ty1 + 1, GRID_Y - 1) * GRID_X * 256
            o11, o12, o21, o22 = r1 + c1, r1 + c2, r2 + c1, r2 + c2
            r = _interp(lut_img, r, o11, o12, o21, o22, xa, xa1, ya, ya1, m, RN)
            lut_g = lut_img + N_TILES * 256
            g = _interp(lut_g, g, o11, o12, o21, o22, xa, xa1, ya, ya1, m, RN)
            lut_b = lut_img + 2 * N_TILES * 256
            b = _interp(lut_b, b, o11, o12, o21, o22, xa, xa1, ya, ya1, m, RN)
            vmax = tl.maximum(tl.maximum(r, g), b)
            vmin = tl.minimum(tl.minimum(r, g), b)
            s = ((vmax - vmin) * tl.load(sdiv_ptr + vmax, mask=m, other=0) + 2048) >> 12
            yy = (4899 * r + 9617 * g + 1868 * b + 8192) >> 14
            cr = tl.minimum(tl.maximum(((r - yy) * 11682 + 2105344) >> 14, 0), 255)
            cb = tl.minimum(tl.maximum(((b - yy) * 9241 + 2105344) >> 14, 0), 255)
            _store_plane(out, table_ptr, 0, b, plane, m)
            _store_plane(out, table_ptr, 1, g, plane, m)
            _store_plane(out, table_ptr, 2, r, plane, m)
            _store_plane(out, table_ptr, 3, s, plane, m)
            _store_plane(out, table_ptr, 4, cr, plane, m)
            _store_plane(out, table_ptr, 5, cb, plane, m)
        else:
            _store_plane(out, table_ptr, 0, r, plane, m)
            _store_plane(out, table_ptr, 1, g, plane, m)
            _store_plane(out, table_ptr, 2, b, plane, m)


def _pow2_at_least(v: int) -> int:
    return 1 << max(int(v) - 1, 0).bit_length()


@triton_op("hvx::clahe_stack", mutates_args={})
def clahe_stack(
    x: torch.Tensor,
    table: torch.Tensor,
    sdiv: torch.Tensor,
    grid_x: int,
    grid_y: int,
    tile_w: int,
    tile_h: int,
    clip: int,
    lut_scale: float,
    inv_tw: float,
    inv_th: float,
    six: bool,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """Fused CLAHE + colour stacking + normalisation (the ``hvx::clahe_stack`` op).

    The float scalars are OpenCV's float32 values (see ``ClaheGeometry``); the
    façade :func:`hvx.preprocess.preprocess` computes them and validates inputs.

    Args:
        x: Tensor[N, H, W, 3] uint8 RGB, any strides, N, H, W >= 1.
        table: Tensor[C, 256] float32, ``table[c, v]`` = output value of plane value v.
        sdiv: Tensor[256] int32, OpenCV's HSV ``sdiv`` table.
        grid_x: CLAHE tiles across.
        grid_y: CLAHE tiles down.
        tile_w: Tile width in the padded image.
        tile_h: Tile height in the padded image.
        clip: Integer histogram clip limit.
        lut_scale: float32(255 / tile area).
        inv_tw: float32(1 / tile_w).
        inv_th: float32(1 / tile_h).
        six: True for the 6-channel mode, False for "rgb" (C = 3, no CLAHE).
        out_dtype: Output dtype (float32, float16 or bfloat16).

    Returns:
        Tensor[N, C, H, W] of ``out_dtype`` on x's device.
    """
    n, h, w, _ = x.shape
    gpu = x.device.type == "cuda"
    # The interpreter casts float32 -> bfloat16 by truncation (the GPU rounds to
    # nearest even): there, write float32 and let torch round.
    kernel_dtype = torch.float32 if not gpu and out_dtype == torch.bfloat16 else out_dtype
    out = torch.empty((n, 6 if six else 3, h, w), dtype=kernel_dtype, device=x.device)
    n_tiles = grid_x * grid_y
    lut = torch.empty((n, 3, n_tiles, 256) if six else (1,), dtype=torch.uint8, device=x.device)
    if six:
        _launch_lut(x, lut, grid_x, tile_w, tile_h, clip, lut_scale)
    _launch_apply(x, lut, table, sdiv, out, grid_x, grid_y, inv_tw, inv_th, six)
    return out.to(out_dtype)


def _fp_options(x: torch.Tensor) -> dict:
    """Launch options: eager GPU launches switch FMA contraction off.

    Under torch.compile the option is not passed (it is not a kernel argument
    there); ``mul_rn`` alone keeps every product rounded on its own.
    """
    if x.device.type == "cuda" and not torch.compiler.is_compiling():
        return {"enable_fp_fusion": False}
    return {}


def _launch_lut(x, lut, grid_x: int, tile_w: int, tile_h: int, clip: int, lut_scale: float):
    """Fills lut[N, 3, tiles, 256] uint8 from x[N, H, W, 3] uint8."""
    n, h, w, _ = x.shape
    n_tiles = lut.shape[2]
    gpu = x.device.type == "cuda"
    if gpu:
        tpp, pix = 1, min(_GPU_PIX, _pow2_at_least(tile_w * tile_h))
    else:
        tpp = min(_pow2_at_least(n_tiles), 256)
        pix = max(_INTERP_BLOCK // tpp, 16)
    sx = x.stride()
    wrap_triton(_clahe_lut_kernel)[(n, triton.cdiv(n_tiles, tpp))](
        x, lut, sx[0], sx[1], sx[2], sx[3],
        h, w, grid_x, n_tiles, tile_h, tile_w, clip, lut_scale,
        TPP=tpp, PIX=pix, RN=gpu, **_fp_options(x),
    )  # fmt: skip


def _launch_apply(x, lut, table, sdiv, out, grid_x, grid_y, inv_tw, inv_th, six: bool):
    """Writes out[N, C, H, W] from x, the LUTs (unused when not six) and the table."""
    n, h, w, _ = x.shape
    plane = h * w
    gpu = x.device.type == "cuda"
    if gpu:
        block, per_prog = _GPU_BLOCK, 1
    else:
        block = min(_pow2_at_least(plane), _INTERP_BLOCK)
        per_prog = triton.cdiv(plane, block)
    sx = x.stride()
    wrap_triton(_clahe_apply_kernel)[(n, triton.cdiv(plane, block * per_prog))](
        x, lut, table, sdiv, out, sx[0], sx[1], sx[2], sx[3],
        h, w, grid_x, grid_y, grid_x * grid_y, inv_tw, inv_th, per_prog,
        BLOCK=block, SIX=six, RN=gpu, **_fp_options(x),
    )  # fmt: skip


def interpreted() -> bool:
    """True when Triton runs on the CPU (``TRITON_INTERPRET=1`` at import time)."""
    return os.environ.get("TRITON_INTERPRET") == "1"
