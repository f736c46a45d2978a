"""Paired, interleaved timing for a shared, noisy machine.

Implementations are called in rounds, A B C A B C ..., after warm-up calls of each;
the ratio of two implementations is taken per round (same moment, same load), and
reported as the median with its 25th-75th percentile spread. Other jobs slow both
sides of a round alike, so the paired ratio is far steadier than a ratio of
separately taken medians. Thread settings of every runtime are pinned together
(:func:`pin_threads`) so no stage can oversubscribe the cores, and recorded.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import numpy as np

from hvx.bench import harness

__all__ = [
    "THREAD_ENV",
    "interleaved",
    "loadavg",
    "measure_pair",
    "paired_ratio",
    "pin_threads",
    "summary",
    "timing",
]

#: Environment variables that size the thread pools of OpenMP, MKL, OpenBLAS and numba.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def pin_threads(n: int) -> dict:
    """Sets torch intra-op (and inter-op 1), numba, OpenCV and the env pools to ``n``.

    ONNX Runtime sessions take their intra-op count at creation: pass ``n`` there
    (``OnnxRuntimeBackend(threads=n)``). The environment variables only act on
    pools not yet started, so a benchmark process should set them before
    importing torch (see ``benchmarks/bench_cpu_precision.py``).

    Returns:
        What each runtime reports after setting (for the results file).

    Raises:
        ValueError: If ``n`` < 1.
    """
    if n < 1:
        raise ValueError(f"expected n >= 1 threads, got {n}")
    import cv2
    import torch

    for name in THREAD_ENV:
        os.environ[name] = str(n)
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # settable only before the first parallel work
        torch.set_num_interop_threads(1)
    cv2.setNumThreads(n)
    out = {
        "requested": n,
        "torch_intra_op": torch.get_num_threads(),
        "torch_inter_op": torch.get_num_interop_threads(),
        "opencv": cv2.getNumThreads(),
        "onnxruntime_intra_op": n,
        "env": {k: os.environ[k] for k in THREAD_ENV},
    }
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        out["numba"] = numba.get_num_threads()
    except ImportError:
        out["numba"] = None
    return out


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, warmup: int | dict[str, int] = 2
) -> dict[str, list[float]]:
    """Times each function once per round, in turn, after ``warmup`` calls each.

    Args:
        fns: Name -> zero-argument callable (blocking; synchronise inside on a GPU).
        rounds: Timed rounds (each calls every function once).
        warmup: Untimed calls per function first (an int, or per name; default 2).

    Returns:
        Name -> ``rounds`` wall times in seconds, in round order.

    Raises:
        ValueError: If ``rounds`` < 1 or ``fns`` is empty.
    """
    if rounds < 1 or not fns:
        raise ValueError(f"expected rounds >= 1 and some functions, got {rounds} and {list(fns)}")
    for name, fn in fns.items():
        for _ in range(warmup.get(name, 2) if isinstance(warmup, dict) else warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def summary(values) -> dict:
    """Median, 25th and 75th percentiles, min and count of a sample."""
    v = np.asarray(values, dtype=np.float64)
    return {
        "median": float(np.median(v)),
        "p25": float(np.percentile(v, 25)),
        "p75": float(np.percentile(v, 75)),
        "min": float(v.min()),
        "n": int(v.size),
    }


def paired_ratio(base: list[float], other: list[float]) -> dict:
    """Per-round ``base / other`` (> 1: ``other`` is faster), summarised.

    Raises:
        ValueError: If the samples differ in length (not paired).
    """
    if len(base) != len(other) or not base:
        raise ValueError(f"expected two paired non-empty samples, got {len(base)}, {len(other)}")
    return summary(np.asarray(base) / np.asarray(other))


def timing(seconds: list[float]):
    """A ``harness.Timing`` (milliseconds) of interleaved wall times, for a Record."""
    ms = np.sort(np.asarray(seconds, dtype=np.float64) * 1e3)
    return harness.Timing(
        median_ms=float(np.median(ms)),
        p20_ms=float(np.percentile(ms, 20)),
        p80_ms=float(np.percentile(ms, 80)),
        min_ms=float(ms[0]),
        repeats=int(ms.size),
    )


def measure_pair(stage: str, base: tuple, mine: tuple, batch: int, size: int, ctx, **warmups):
    """A baseline and an hvx implementation timed in alternation; their two Records.

    Args:
        stage: Stage name.
        base: ``(impl name, zero-argument callable)`` of the baseline.
        mine: ``(impl name, callable)`` of hvx.
        batch: Tiles per call.
        size: Tile edge.
        ctx: ``harness.BenchContext`` (device, warm-up, repeats = rounds).
        **warmups: Per-impl warm-up overrides, by impl name.

    Returns:
        ``(base_record, mine_record)``; ``mine.speedup`` is the median per-round
        ratio and ``mine.extra["paired_ratio"]`` its p25-p75. Both share the peak
        memory of the pair (``memory_scope="stage"``).
    """
    sync = harness.device_sync(ctx.device)

    def wrap(fn):
        if sync is None:
            return fn

        def call():
            sync()
            fn()
            sync()

        return call

    harness.reset_peaks(ctx.device)
    warm = {base[0]: ctx.warmup, mine[0]: ctx.warmup, **warmups}
    times = interleaved({base[0]: wrap(base[1]), mine[0]: wrap(mine[1])}, ctx.repeats, warm)
    ratio = paired_ratio(times[base[0]], times[mine[0]])
    common = {
        "device": ctx.device,
        "peak_rss_mb": harness.peak_rss_mb(),
        "peak_device_mb": harness.device_peak_mb(ctx.device),
        "memory_scope": "stage",
    }
    b = harness.Record(stage, base[0], batch, size, timing(times[base[0]]), **common)
    m = harness.Record(
        stage,
        mine[0],
        batch,
        size,
        timing(times[mine[0]]),
        baseline=base[0],
        speedup=ratio["median"],
        extra={"paired_ratio": ratio},
        **common,
    )
    return b, m
