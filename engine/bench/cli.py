"""The ``hvx-bench`` command line: pick stages, run them, print and save results."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from hvx.bench import backends, harness
from hvx.bench import metrics as metrics_stage
from hvx.bench import postprocess as postprocess_stage
from hvx.bench import preprocess as preprocess_stage

# Stage modules, in run order. Each has NAME, HELP and run(ctx) -> list[Record].
_STAGES: tuple = (preprocess_stage, postprocess_stage, metrics_stage, backends)


def _csv_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    """Returns the ``hvx-bench`` parser."""
    names = [s.NAME for s in _STAGES]
    stage_help = "; ".join(f"{s.NAME}: {s.HELP}" for s in _STAGES) or "none built yet"
    p = argparse.ArgumentParser(
        prog="hvx-bench",
        description="Benchmark hvx stage by stage against the baseline each stage "
        "replaces, measured in the same run on the same inputs. Stages: " + stage_help,
    )
    p.add_argument(
        "--stages",
        default=",".join(names),
        help=f"comma-separated stages to run (default: all of {','.join(names) or '-'})",
    )
    p.add_argument("--batch", type=_csv_ints, default=None, help="batch sizes, e.g. 1,8,32")
    p.add_argument("--size", type=int, default=256, help="tile edge in pixels (default 256)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if any")
    p.add_argument("--quick", action="store_true", help="small batches, few repeats (smoke run)")
    p.add_argument("--json", metavar="OUT", default=None, help="write all records as JSON here")
    return p


def _print_table(records: list[harness.Record]) -> None:
    head = f"{'stage':<12} {'impl':<14} {'batch':>5} {'ms/batch':>10} {'p20-p80':>17}"
    print(head + f" {'tiles/s':>10} {'vs':<12} {'speed-up':>8}")
    for r in records:
        t = r.timing
        spread = f"{t.p20_ms:.2f}-{t.p80_ms:.2f}"
        ratio = f"{r.speedup:.1f}x" if r.speedup else ""
        print(
            f"{r.stage:<12} {r.impl:<14} {r.batch:>5} {t.median_ms:>10.2f} {spread:>17}"
            f" {r.tiles_per_s:>10.1f} {r.baseline or '':<12} {ratio:>8}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``hvx-bench``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="hvx-bench: %(message)s")
    by_name = {s.NAME: s for s in _STAGES}
    wanted = [s for s in args.stages.split(",") if s]
    unknown = [s for s in wanted if s not in by_name]
    if unknown:
        print(f"hvx-bench: unknown stage(s) {unknown}; available: {list(by_name)}", file=sys.stderr)
        return 2
    if not wanted:
        print("hvx-bench: no benchmark stages are built yet", file=sys.stderr)
        return 2
    device = args.device
    if device is None:
        from hvx.features import features

        device = "cuda" if features().cuda.available else "cpu"
    ctx = harness.BenchContext(
        batches=args.batch or ([1, 8] if args.quick else [1, 8, 32]),
        size=args.size,
        repeats=2 if args.quick else args.repeats,
        warmup=args.warmup,
        device=device,
        quick=args.quick,
    )
    records: list[harness.Record] = []
    for name in wanted:
        records += by_name[name].run(ctx)
    _print_table(records)
    if args.json:
        doc = {
            "provenance": harness.provenance(),
            "peak_rss_mb": harness.peak_rss_mb(),
            "records": [r.to_json() for r in records],
        }
        harness.write_json(args.json, doc)
        print(f"wrote {args.json}")
    return 0
