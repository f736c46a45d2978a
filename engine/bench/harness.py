"""Timing, memory and provenance helpers shared by every benchmark stage.

Timings: warm-up calls, then ``repeats`` timed calls; each call is bracketed by
``sync`` (``torch.cuda.synchronize`` on a GPU) so asynchronous work is counted.
Statistics are the median and the 20th/80th percentiles (Triton/Liger style).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "BenchContext",
    "Record",
    "Timing",
    "peak_rss_mb",
    "provenance",
    "time_call",
    "write_json",
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
    """

    median_ms: float
    p20_ms: float
    p80_ms: float
    min_ms: float
    repeats: int


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
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    return Timing(
        median_ms=_quantile(samples, 0.5),
        p20_ms=_quantile(samples, 0.2),
        p80_ms=_quantile(samples, 0.8),
        min_ms=samples[0],
        repeats=repeats,
    )


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux/macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@dataclasses.dataclass
class Record:
    """One measured row: a stage, an implementation, a batch size.

    Attributes:
        stage: Stage name ("preprocess", "postprocess", ...).
        impl: Implementation measured ("native", "reference", ...).
        batch: Tiles per call.
        size: Tile edge in pixels.
        timing: Its :class:`Timing`.
        baseline: The implementation this one replaces, if any.
        speedup: ``baseline median / this median`` when a baseline was measured.
        extra: Stage-specific numbers (GB/s, TFLOP/s, threads, ...).
    """

    stage: str
    impl: str
    batch: int
    size: int
    timing: Timing
    baseline: str | None = None
    speedup: float | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def tiles_per_s(self) -> float:
        """Tiles per second at the median time."""
        return self.batch / (self.timing.median_ms / 1e3)

    def to_json(self) -> dict:
        """Returns a JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["tiles_per_s"] = self.tiles_per_s
        return d


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


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def provenance() -> dict:
    """Machine, versions, git SHA and date for a results file."""
    from hvx._version import __version__
    from hvx.features import features

    feats = features()
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "hvx": __version__,
        "git_sha": _git_sha(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpu": feats.cuda.detail if feats.cuda.available else None,
        "versions": {name: p.version for name, p in feats.rows() if p.version},
    }


def write_json(path: str | os.PathLike, doc: dict) -> None:
    """Writes ``doc`` as JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
