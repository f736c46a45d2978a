"""Timing and memory helpers shared by every benchmark stage.

The provenance header of a results file and its atomic writer live in
:mod:`hvx.provenance` (shared with training).

Timings: warm-up calls, then ``repeats`` timed calls; each call is bracketed by
``sync`` (``torch.cuda.synchronize`` on a GPU) so asynchronous work is counted.
Statistics are the median and the 20th/80th percentiles (Triton/Liger style).
"""

from __future__ import annotations

import dataclasses
import functools
import resource
import sys
import time
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")

__all__ = [
    "BenchContext",
    "Record",
    "Timing",
    "copy_bandwidth_gbs",
    "device_peak_mb",
    "device_sync",
    "flops_per_tile",
    "is_oom",
    "matmul_peak_tflops",
    "measure",
    "peak_rss_mb",
    "reset_peaks",
    "time_call",
    "with_backoff",
]


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall-clock statistics of repeated calls, in milliseconds.

    Attributes:
        median_ms: Median time per call.
        p20_ms: 20th percentile.
        p80_ms: 80th percentile.
        min_ms: Fastest call.
        repeats: Number of timed calls.
        cpu_median_ms: Median process CPU time per call (all threads of this
            process), less hurt than wall time by other jobs on a shared machine.
    """

    median_ms: float
    p20_ms: float
    p80_ms: float
    min_ms: float
    repeats: int
    cpu_median_ms: float | None = None


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of an ascending list."""
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def time_call(
    fn: Callable[[], object],
    *,
    warmup: int = 1,
    repeats: int = 5,
    sync: Callable[[], None] | None = None,
) -> Timing:
    """Times ``fn()`` after ``warmup`` untimed calls.

    Args:
        fn: The call to time (no arguments).
        warmup: Untimed calls first (compilation, caches).
        repeats: Timed calls, >= 1.
        sync: Called before starting and before stopping each timer (device sync).

    Returns:
        The :class:`Timing` of the timed calls.

    Raises:
        ValueError: If ``repeats`` < 1 or ``warmup`` < 0.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"expected repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        fn()
    samples = []
    cpu = []
    for _ in range(repeats):
        if sync:
            sync()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if sync:
            sync()
        samples.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    samples.sort()
    cpu.sort()
    return Timing(
        median_ms=_quantile(samples, 0.5),
        p20_ms=_quantile(samples, 0.2),
        p80_ms=_quantile(samples, 0.8),
        min_ms=samples[0],
        repeats=repeats,
        cpu_median_ms=_quantile(cpu, 0.5),
    )


def _vm_hwm_kib() -> int | None:
    """VmHWM (peak RSS since start or the last reset) from /proc, in KiB; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process since start or :func:`reset_peaks`, in MiB.

    Linux reads ``VmHWM`` (resettable); elsewhere ``ru_maxrss`` (since start).
    """
    hwm = _vm_hwm_kib()
    if hwm is not None:
        return hwm / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def reset_peaks(device: str = "cpu") -> bool:
    """Resets the peak host RSS (Linux ``clear_refs``) and the device's peak memory.

    Returns:
        Whether the host peak could be reset (False: :func:`peak_rss_mb` keeps
        counting from process start).
    """
    host = False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        host = True
    except OSError:
        pass
    if _is_cuda(device):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    return host


def device_peak_mb(device: str = "cpu") -> float | None:
    """``torch.cuda.max_memory_allocated`` since the last reset, in MiB; None on the CPU."""
    if not _is_cuda(device):
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def device_sync(device: str) -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` for a CUDA device, None for the CPU."""
    if not _is_cuda(device):
        return None
    import torch

    return torch.cuda.synchronize


def is_oom(err: BaseException) -> bool:
    """Whether ``err`` is an out-of-memory error (host MemoryError or CUDA OOM)."""
    if isinstance(err, MemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and (
        "out of memory" in text or "outofmemory" in type(err).__name__.lower()
    )


def _free_device_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def with_backoff(
    fn: Callable[[int], _T], batch: int, *, on_oom: Callable[[], None] = _free_device_memory
) -> tuple[_T, int, list[dict]]:
    """Calls ``fn(batch)``, halving the batch on out-of-memory errors (timm style).

    Args:
        fn: Measures one batch size; may raise an OOM error (:func:`is_oom`).
        batch: The batch size asked for, >= 1.
        on_oom: Called after each OOM before retrying (frees cached memory).

    Returns:
        ``(fn's result, the batch that fitted, back-offs)``; each back-off is
        ``{"batch": b, "error": "first line of the error"}``.

    Raises:
        ValueError: If ``batch`` < 1.
        The OOM error itself when even batch 1 does not fit; other errors at once.
    """
    if batch < 1:
        raise ValueError(f"expected batch >= 1, got {batch}")
    backoffs: list[dict] = []
    while True:
        try:
            return fn(batch), batch, backoffs
        except (RuntimeError, MemoryError) as err:
            if not is_oom(err) or batch == 1:
                raise
            backoffs.append({"batch": batch, "error": str(err).splitlines()[0][:200]})
            on_oom()
            batch //= 2


@dataclasses.dataclass
class Record:
    """One measured row: a stage, an implementation, a batch size.

    Attributes:
        stage: Stage name ("preprocess", "postprocess", ...).
        impl: Implementation measured ("native", "reference", ...).
        batch: Tiles per call (after any out-of-memory back-off).
        size: Tile edge in pixels.
        timing: Its :class:`Timing`.
        baseline: The implementation this one replaces, if any.
        speedup: ``baseline median / this median`` when a baseline was measured.
        extra: Stage-specific numbers (GB/s, TFLOP/s, threads, ...).
        device: Where it ran ("cpu", "cuda", "cuda:0").
        peak_rss_mb: Peak host RSS of the process while measuring (MiB); see
            ``memory_scope``.
        peak_device_mb: ``torch.cuda.max_memory_allocated`` while measuring (MiB),
            reset before each record; None on the CPU.
        memory_scope: "record" (peaks reset before this record), "stage" (peaks
            of the whole stage, for stages that do not reset per record) or
            "process" (host peak since process start: no reset on this OS).
        requested_batch: The batch asked for, when an OOM back-off changed it.
        backoff: The back-offs: ``[{"batch": b, "error": "..."}]``, empty if none.
    """

    stage: str
    impl: str
    batch: int
    size: int
    timing: Timing
    baseline: str | None = None
    speedup: float | None = None
    extra: dict = dataclasses.field(default_factory=dict)
    device: str = "cpu"
    peak_rss_mb: float | None = None
    peak_device_mb: float | None = None
    memory_scope: str | None = None
    requested_batch: int | None = None
    backoff: list = dataclasses.field(default_factory=list)

    @property
    def tiles_per_s(self) -> float:
        """Tiles per second at the median time."""
        return self.batch / (self.timing.median_ms / 1e3)

    def to_json(self) -> dict:
        """Returns a JSON-ready dict (adds ``tiles_per_s`` and ``ms_per_batch``)."""
        d = dataclasses.asdict(self)
        d["tiles_per_s"] = self.tiles_per_s
        d["ms_per_batch"] = self.timing.median_ms
        return d


def measure(
    stage: str,
    impl: str,
    batch: int,
    size: int,
    fn: Callable[[], object],
    ctx: BenchContext,
    *,
    warmup: int | None = None,
    repeats: int | None = None,
    **fields,
) -> Record:
    """Times ``fn`` on ``ctx.device`` with per-record peak memory; returns its Record.

    Resets the host and device peaks, times ``fn`` (warm-up, then ``repeats``
    calls, each bracketed by a device synchronisation on CUDA), and reads both
    peaks back.

    Args:
        stage: The Record's stage name.
        impl: The implementation measured.
        batch: Tiles per call.
        size: Tile edge in pixels.
        fn: The call to time.
        ctx: Device, warm-up and repeat counts.
        warmup: Overrides ``ctx.warmup``.
        repeats: Overrides ``ctx.repeats``.
        **fields: Other :class:`Record` fields (baseline, speedup, extra, ...).
    """
    scope = "record" if reset_peaks(ctx.device) else "process"
    t = time_call(
        fn,
        warmup=ctx.warmup if warmup is None else warmup,
        repeats=ctx.repeats if repeats is None else repeats,
        sync=device_sync(ctx.device),
    )
    return Record(
        stage,
        impl,
        batch,
        size,
        t,
        device=ctx.device,
        peak_rss_mb=peak_rss_mb(),
        peak_device_mb=device_peak_mb(ctx.device),
        memory_scope=scope,
        **fields,
    )


@functools.cache
def flops_per_tile(variant: str, size: int, in_chans: int = 6, num_types: int = 5) -> float:
    """FLOPs of one ``size`` x ``size`` tile through the network (cached per process).

    Counted once with ``torch.utils.flop_counter.FlopCounterMode`` on meta
    tensors: FLOP = 2 x MAC, convolutions and matmuls only (norms, activations
    and softmax are not counted), as in ``benchmarks/model_costs.py``.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from hvx.model import create_model

    with torch.device("meta"):
        model = create_model(variant, in_chans=in_chans, num_types=num_types).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.empty(1, in_chans, size, size))
    return float(counter.get_total_flops())


@functools.cache
def matmul_peak_tflops(device: str = "cuda", n: int = 8192) -> float:
    """The device's measured dense fp16 matmul throughput, TFLOP/s (cached per process).

    ``n`` x ``n`` x ``n`` fp16 matmul, median of 10 calls after 3 warm-ups; FLOP = 2 n^3.
    """
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.float16)
    b = torch.randn(n, n, device=device, dtype=torch.float16)
    t = time_call(lambda: a @ b, warmup=3, repeats=10, sync=torch.cuda.synchronize)
    return 2 * n**3 / (t.median_ms / 1e3) / 1e12


@functools.cache
def copy_bandwidth_gbs(device: str = "cuda", mib: int = 256) -> float:
    """The device's measured device-to-device copy bandwidth, GB/s (read + write counted).

    A ``mib`` MiB ``copy_``, median of 20 calls after 3 warm-ups (cached per process).
    """
    import torch

    src = torch.empty(mib << 20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    t = time_call(lambda: dst.copy_(src), warmup=3, repeats=20, sync=torch.cuda.synchronize)
    return 2 * (mib << 20) / (t.median_ms / 1e3) / 1e9


def device_peaks(device: str) -> dict | None:
    """``{"name", "matmul_fp16_tflops", "copy_gb_per_s"}`` of a CUDA device; None on the CPU."""
    if not _is_cuda(device):
        return None
    import torch

    return {
        "name": torch.cuda.get_device_name(),
        "matmul_fp16_tflops": matmul_peak_tflops(device),
        "copy_gb_per_s": copy_bandwidth_gbs(device),
    }


@dataclasses.dataclass
class BenchContext:
    """What every stage is given.

    Attributes:
        batches: Batch sizes to measure.
        size: Tile edge in pixels.
        repeats: Timed calls per measurement.
        warmup: Untimed calls first.
        device: "cpu" or "cuda".
        quick: Small inputs and few repeats (CI smoke run).
        options: Stage-specific options from the command line.
    """

    batches: list[int]
    size: int = 256
    repeats: int = 5
    warmup: int = 1
    device: str = "cpu"
    quick: bool = False
    options: dict = dataclasses.field(default_factory=dict)

    @property
    def sync(self) -> Callable[[], None] | None:
        """Device synchronisation for timing (None on the CPU)."""
        return device_sync(self.device)
