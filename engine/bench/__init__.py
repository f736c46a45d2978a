"""``hvx-bench``: per-stage and end-to-end benchmarks against baselines.

Each stage lives in its own module under :mod:`hvx.bench` and exposes
``NAME`` and ``run(ctx) -> list[Record]``; the harness (timing, memory,
machine facts, JSON) is in :mod:`hvx.bench.harness`.
"""

from hvx.bench.cli import main

__all__ = ["main"]
