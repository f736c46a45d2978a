"""Bench stage "preprocess": hvx.preprocess against the OpenCV reference it replaces.

CPU: the numba path vs ``impl="reference"`` (OpenCV CLAHE + cvtColor + numpy),
same tiles, same thread count (``ctx.options["threads"]``, default: all cores),
timed in alternation (:func:`hvx.bench.paired.measure_pair`: ``repeats`` rounds,
the speed-up is the median per-round ratio), so the load of a shared machine
hits both sides alike.
CUDA: the Triton kernel pair (float16 output), with the bytes it moves per tile,
the achieved GB/s and the fraction of the device's measured copy bandwidth;
the CPU reference is timed on the same tiles as the baseline.

Inputs: real CoNSeP tiles when the shared data is present (found like the
tests do: ``$HVX_CONSEP_DIR`` or ``shared/data/consep`` beside the checkout),
else the packaged sample tiles; never synthetic pixels (see ``_inputs``).
"""

from __future__ import annotations

import os

import numpy as np

from hvx.bench import _inputs, harness, paired

NAME = "preprocess"
HELP = "CLAHE + 6-channel stacking: numba (CPU) / Triton (CUDA) vs the OpenCV reference"


def load_tiles(n: int, size: int) -> tuple[np.ndarray, str]:
    """Loads n real RGB tiles of size x size (see :func:`hvx.bench._inputs.real_tiles`).

    Returns:
        (ndarray[n, size, size, 3] uint8, a description of the source).

    Raises:
        FileNotFoundError: No real tiles around (CoNSeP or packaged samples).
    """
    return _inputs.real_tiles(n, size)


def bytes_per_tile(h: int, w: int, channels: int, out_bytes: int, n_tiles: int) -> int:
    """Bytes the Triton pair moves for one tile (6ch mode).

    LUT kernel: reads the RGB tile (3 B/px), writes 3 LUTs per CLAHE tile.
    Apply kernel: reads the RGB tile again (3 B/px) and the LUTs (once, from
    cache), writes ``channels`` planes of ``out_bytes`` each.
    """
    return h * w * (3 + 3 + channels * out_bytes) + 2 * 3 * n_tiles * 256


def _set_threads(threads: int) -> int:
    """Sets numba, OpenCV and torch to ``threads``; returns the previous numba count."""
    import cv2
    import numba
    import torch

    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)
    return before


def run(ctx: harness.BenchContext) -> list[harness.Record]:
    """Measures every batch size of ``ctx``; returns numba/triton and reference records.

    Thread counts (numba, OpenCV, torch) are set to ``ctx.options["threads"]``
    (default: all cores) for the run and restored after.
    """
    threads = int(ctx.options.get("threads") or os.cpu_count() or 1)
    before = _set_threads(threads)
    try:
        return _run(ctx, threads)
    finally:
        _set_threads(before)


def _run(ctx: harness.BenchContext, threads: int) -> list[harness.Record]:
    import torch

    from hvx.preprocess import PreprocessConfig, preprocess

    cfg = PreprocessConfig()
    cuda = ctx.device == "cuda"
    copy_gbs = harness.copy_bandwidth_gbs(ctx.device) if cuda else None
    sync = torch.cuda.synchronize if cuda else None
    records: list[harness.Record] = []
    for batch in ctx.batches:
        tiles, source = load_tiles(batch, ctx.size)
        extra = {"threads": threads, "inputs": source, "config": cfg.to_dict()}
        if not cuda:
            base, fast = paired.measure_pair(
                NAME,
                ("reference", lambda t=tiles: preprocess(t, cfg, impl="reference")),
                ("numba", lambda t=tiles: preprocess(t, cfg, impl="numba")),
                batch,
                ctx.size,
                ctx,
                numba=max(ctx.warmup, 1),  # the first call compiles
            )
            base.extra = dict(extra)
            fast.extra = {
                **extra,
                **fast.extra,
                "ms_per_tile": fast.timing.median_ms / batch,
                "dtype": "float32",
            }
            records += [base, fast]
            continue
        ref = harness.time_call(
            lambda t=tiles: preprocess(t, cfg, impl="reference"),
            warmup=ctx.warmup,
            repeats=ctx.repeats,
        )
        records.append(harness.Record(NAME, "reference", batch, ctx.size, ref, extra=extra))
        x = torch.from_numpy(tiles).cuda()
        t = harness.time_call(
            lambda x=x: preprocess(x, cfg, impl="triton"),
            warmup=max(ctx.warmup, 2),
            repeats=ctx.repeats,
            sync=sync,
        )
        moved = bytes_per_tile(ctx.size, ctx.size, 6, 2, cfg.tile_grid[0] * cfg.tile_grid[1])
        gbs = moved * batch / (t.median_ms / 1e3) / 1e9
        extra = {
            **extra,
            "device": torch.cuda.get_device_name(),
            "bytes_per_tile": moved,
            "gb_per_s": gbs,
            "copy_gb_per_s": copy_gbs,
            "fraction_of_copy_bandwidth": gbs / copy_gbs,
            "us_per_tile": t.median_ms * 1e3 / batch,
            "dtype": "float16",
        }
        records.append(
            harness.Record(
                NAME,
                "triton",
                batch,
                ctx.size,
                t,
                baseline="reference",
                speedup=ref.median_ms / t.median_ms,
                extra=extra,
            )
        )
    return records
