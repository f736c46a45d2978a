"""Bench stage "preprocess": hvx.preprocess against the OpenCV reference it replaces.

CPU: the numba path vs ``impl="reference"`` (OpenCV CLAHE + cvtColor + numpy),
same tiles, same thread count (``ctx.options["threads"]``, default: all cores).
CUDA: the Triton kernel pair (float16 output), with the bytes it moves per tile,
the achieved GB/s and the fraction of the device's measured copy bandwidth;
the CPU reference is timed on the same tiles as the baseline.

Inputs: real CoNSeP 256x256 tiles when the shared data is present (found like
the tests do: ``$HVX_CONSEP_DIR`` or ``shared/data/consep`` beside the checkout),
else smooth random tiles.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hvx.bench import harness

NAME = "preprocess"
HELP = "CLAHE + 6-channel stacking: numba (CPU) / Triton (CUDA) vs the OpenCV reference"


def find_consep() -> Path | None:
    """The shared CoNSeP folder, or None when absent."""
    if os.environ.get("HVX_CONSEP_DIR"):
        path = Path(os.environ["HVX_CONSEP_DIR"])
        return path if (path / "images").is_dir() else None
    for parent in Path(__file__).resolve().parents:
        path = parent / "shared" / "data" / "consep"
        if (path / "images").is_dir():
            return path
    return None


def load_tiles(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """Loads n RGB tiles of size x size: CoNSeP crops when present, else random.

    Returns:
        (ndarray[n, size, size, 3] uint8, a description of the source).
    """
    import cv2

    root = find_consep()
    if root is not None and size <= 256:
        names = sorted((root / "images").glob("*.png"))
        picked = [names[(7 * i) % len(names)] for i in range(n)]
        tiles = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in picked]
        return np.stack([t[:size, :size] for t in tiles]), f"CoNSeP tiles ({root})"
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 180, size)[None, None, :, None]
    tiles = (ramp + rng.integers(0, 60, (n, size, size, 3))).clip(0, 255).astype(np.uint8)
    return tiles, "random smooth tiles (CoNSeP not found)"


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


def _copy_bandwidth_gbs() -> float:
    """Device-to-device copy bandwidth in GB/s (read + write counted), median of runs."""
    import torch

    src = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = harness.time_call(lambda: dst.copy_(src), warmup=3, repeats=20, sync=torch.cuda.synchronize)
    return 2 * src.numel() / (t.median_ms / 1e3) / 1e9


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
    copy_gbs = _copy_bandwidth_gbs() if cuda else None
    sync = torch.cuda.synchronize if cuda else None
    records: list[harness.Record] = []
    for batch in ctx.batches:
        tiles, source = load_tiles(batch, ctx.size)
        extra = {"threads": threads, "inputs": source, "config": cfg.to_dict()}
        ref = harness.time_call(
            lambda t=tiles: preprocess(t, cfg, impl="reference"),
            warmup=ctx.warmup,
            repeats=ctx.repeats,
        )
        records.append(harness.Record(NAME, "reference", batch, ctx.size, ref, extra=extra))
        if cuda:
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
            impl = "triton"
        else:
            t = harness.time_call(
                lambda t=tiles: preprocess(t, cfg, impl="numba"),
                warmup=max(ctx.warmup, 1),
                repeats=ctx.repeats,
            )
            extra = {**extra, "ms_per_tile": t.median_ms / batch, "dtype": "float32"}
            impl = "numba"
        records.append(
            harness.Record(
                NAME,
                impl,
                batch,
                ctx.size,
                t,
                baseline="reference",
                speedup=ref.median_ms / t.median_ms,
                extra=extra,
            )
        )
    return records
