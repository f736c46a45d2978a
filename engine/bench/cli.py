"""The ``hvx-bench`` command line: pick stages, run them, print and save results.

The JSON it writes (``--json OUT``) follows
``benchmarks/schema/bench-result.schema.json``: provenance (machine, GPU,
versions, git SHA, date), the run's settings and load average, the device's
measured peaks (GPU), and one long-format record per stage x implementation x
variant x batch. A stage that fails is recorded under ``failures`` and the
others still run (exit code 1).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence

from hvx.bench import backends as backends_stage
from hvx.bench import e2e as e2e_stage
from hvx.bench import harness, paired
from hvx.bench import hovernet as hovernet_stage
from hvx.bench import metrics as metrics_stage
from hvx.bench import network as network_stage
from hvx.bench import postprocess as postprocess_stage
from hvx.bench import preprocess as preprocess_stage
from hvx.features import features
from hvx.provenance import provenance, write_json

# Stage modules, in run order. Each has NAME, HELP and run(ctx) -> list[Record].
_STAGES: tuple = (
    preprocess_stage,
    network_stage,
    postprocess_stage,
    metrics_stage,
    e2e_stage,
    backends_stage,
    hovernet_stage,
)
#: Stages run when --stages is not given: all but ``backends`` (every backend of the
#: device vs torch fp32; ``network`` already measures the one the Engine picks) and
#: ``hovernet`` (needs the official hover_net code, see hvx.bench.hovernet).
DEFAULT_STAGES = ("preprocess", "network", "postprocess", "metrics", "e2e")

#: Version of the JSON layout (bump on incompatible changes; the schema pins it).
SCHEMA = "hvx-bench/1"

log = logging.getLogger("hvx.bench")


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


def _csv_names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


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
        default=",".join(DEFAULT_STAGES),
        help=f"comma-separated stages to run, from {','.join(names)} "
        f"(default: {','.join(DEFAULT_STAGES)})",
    )
    p.add_argument("--batch", type=_csv_ints, default=None, help="batch sizes, e.g. 1,8,32,64")
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="tile edge in pixels (default 256; network/e2e use 128 under --quick on a CPU)",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if any")
    p.add_argument(
        "--backend",
        choices=["auto", "torch", "onnxruntime", "tensorrt"],
        default="auto",
        help="network backend for the network and e2e stages (default: what Engine.load picks)",
    )
    p.add_argument(
        "--variant",
        type=_csv_names,
        default=None,
        help="model variants for network/e2e (default: fast_convnext_atto,convnext_atto on "
        "a CPU; convnext_small,fast_convnext_tiny on a GPU)",
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="BUNDLE",
        help="a trained model bundle for network/e2e (default: random weights, seed 0)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for both sides of preprocess/network/e2e (default: all cores)",
    )
    p.add_argument("--quick", action="store_true", help="small batches, few repeats (smoke run)")
    p.add_argument("--json", metavar="OUT", default=None, help="write all records as JSON here")
    p.add_argument("--note", default=None, help="free text kept in the JSON (conditions, caveats)")
    return p


def _peak_text(r: harness.Record) -> str:
    if r.peak_device_mb is not None:
        return f"{r.peak_device_mb:.0f}d"
    return f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb is not None else ""


def format_table(records: list[harness.Record]) -> str:
    """A fixed-width table of the records: one row each, baseline ratios on hvx rows.

    ``peak MB`` is the host RSS peak, or the device peak (suffix ``d``) on a GPU.
    """
    head = (
        f"{'stage':<12} {'impl':<30} {'variant':<19} {'batch':>5} {'ms/batch':>10}"
        f" {'p20-p80':>17} {'tiles/s':>9} {'peak MB':>8}  {'vs':<30} {'speed-up':>8}"
    )
    lines = [head]
    for r in records:
        t = r.timing
        spread = f"{t.p20_ms:.2f}-{t.p80_ms:.2f}"
        ratio = f"{r.speedup:.2f}x" if r.speedup else ""
        variant = str(r.extra.get("variant", ""))
        lines.append(
            f"{r.stage:<12} {r.impl:<30} {variant:<19} {r.batch:>5} {t.median_ms:>10.2f}"
            f" {spread:>17} {r.tiles_per_s:>9.1f} {_peak_text(r):>8}  {r.baseline or '':<30}"
            f" {ratio:>8}"
        )
        if r.backoff:
            steps = " -> ".join(str(b["batch"]) for b in r.backoff)
            lines.append(f"{'':<12} out of memory at batch {steps}; measured at {r.batch}")
        if "fraction_of_matmul_peak" in r.extra:
            lines.append(
                f"{'':<12} {r.extra['achieved_tflops']:.1f} TFLOP/s = "
                f"{100 * r.extra['fraction_of_matmul_peak']:.0f}% of the measured fp16 matmul peak"
            )
        elif "fraction_of_copy_bandwidth" in r.extra:
            lines.append(
                f"{'':<12} {r.extra['gb_per_s']:.0f} GB/s = "
                f"{100 * r.extra['fraction_of_copy_bandwidth']:.0f}% of the measured copy bandwidth"
            )
    return "\n".join(lines)


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def select_stages(text: str) -> list:
    """The stage modules named in ``text`` (comma-separated), in the order given.

    Raises:
        ValueError: For an unknown or repeated name, or no name at all.
    """
    by_name = {s.NAME: s for s in _STAGES}
    wanted = _csv_names(text)
    if not wanted:
        raise ValueError(f"expected at least one stage of {list(by_name)}, got {text!r}")
    unknown = [s for s in wanted if s not in by_name]
    if unknown:
        raise ValueError(f"expected stages from {list(by_name)}, got unknown {unknown}")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"expected each stage once, got {wanted}")
    return [by_name[s] for s in wanted]


def run_stages(
    stages: list,
    ctx: harness.BenchContext,
    after_stage: Callable[[list[harness.Record], list[dict]], None] | None = None,
) -> tuple[list[harness.Record], list[dict]]:
    """Runs each stage; returns all records and the failures (one dict per failed stage).

    Peaks are reset before each stage; records a stage did not give per-record
    peaks get the stage's peaks (``memory_scope="stage"``). ``after_stage`` is
    called with the records and failures so far after each stage (the CLI
    saves partial results, so a run killed by a time limit keeps its numbers).
    """
    records: list[harness.Record] = []
    failures: list[dict] = []
    for stage in stages:
        harness.reset_peaks(ctx.device)
        t0 = time.perf_counter()
        try:
            got = stage.run(ctx)
        except Exception as err:  # a failed stage must not lose the others' numbers
            log.error("stage %s failed: %s", stage.NAME, err)
            failures.append(
                {
                    "stage": stage.NAME,
                    "error": f"{type(err).__name__}: {err}",
                    "traceback": traceback.format_exc(limit=8),
                }
            )
            continue
        stage_rss = harness.peak_rss_mb()
        stage_dev = harness.device_peak_mb(ctx.device)
        for r in got:
            if r.memory_scope is None:
                r.device = ctx.device
                r.peak_rss_mb, r.peak_device_mb, r.memory_scope = stage_rss, stage_dev, "stage"
        log.info("stage %s: %d records in %.1f s", stage.NAME, len(got), time.perf_counter() - t0)
        records += got
        if after_stage:
            after_stage(records, failures)
    return records, failures


class _UsageError(ValueError):
    """A bad command line (exit code 2)."""


def _check_usage(args: argparse.Namespace) -> tuple[list, str]:
    """Returns ``(stages, device)`` for valid arguments.

    Raises:
        _UsageError: Naming what was expected and what came in.
    """
    try:
        stages = select_stages(args.stages)
    except ValueError as err:
        raise _UsageError(str(err)) from None
    if args.variant:
        from hvx.model import list_variants

        unknown = [v for v in args.variant if v not in list_variants()]
        if unknown:
            raise _UsageError(f"expected --variant from {list_variants()}, got {unknown}")
    for flag, value in (("--size", args.size), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise _UsageError(f"expected {flag} >= 1, got {value}")
    has_cuda = features().cuda.available
    device = args.device or ("cuda" if has_cuda else "cpu")
    if device == "cuda" and not has_cuda:
        raise _UsageError("expected a visible CUDA GPU for --device cuda, got none")
    return stages, device


def _context(args: argparse.Namespace, device: str) -> harness.BenchContext:
    """The :class:`~hvx.bench.harness.BenchContext` every stage gets."""
    return harness.BenchContext(
        batches=args.batch or ([1, 8] if args.quick else [1, 8, 32]),
        size=args.size or 256,
        repeats=2 if args.quick else args.repeats,
        warmup=args.warmup,
        device=device,
        quick=args.quick,
        options={
            "backend": args.backend,
            "variants": args.variant,
            "model": args.model,
            "size_given": args.size is not None,
            "threads": args.threads,
        },
    )


def _run_record(args, argv, stages, ctx, pins, started: float, load_start) -> dict:
    """The ``run`` block of the JSON (settings, wall time, load average), incomplete."""
    return {
        "argv": list(sys.argv[1:] if argv is None else argv),
        "stages": [s.NAME for s in stages],
        "device": ctx.device,
        "quick": args.quick,
        "batches": ctx.batches,
        "size": ctx.size,
        "repeats": ctx.repeats,
        "warmup": ctx.warmup,
        "backend": args.backend,
        "variants": args.variant,
        "model": args.model,
        "threads": args.threads,
        "thread_pins": pins,
        "complete": False,
        "note": args.note,
        "wall_s": time.perf_counter() - started,
        "load_average_start": load_start,
        "load_average_end": _load_average(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``hvx-bench``; returns the exit code (0 ok, 1 a stage failed, 2 bad usage)."""
    started = time.perf_counter()
    load_start = _load_average()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="hvx-bench: %(message)s")
    try:
        stages, device = _check_usage(args)
    except _UsageError as err:
        print(f"hvx-bench: {err}", file=sys.stderr)
        return 2
    ctx = _context(args, device)
    pins = None
    if args.threads:  # every pool at once (torch, OpenMP, numba, OpenCV; ORT per session)
        pins = paired.pin_threads(args.threads)
    peaks = harness.device_peaks(device)
    if peaks:
        log.info(
            "%s: fp16 matmul %.0f TFLOP/s, copy %.0f GB/s (measured)",
            peaks["name"],
            peaks["matmul_fp16_tflops"],
            peaks["copy_gb_per_s"],
        )

    def document(records, failures, complete):
        run = _run_record(args, argv, stages, ctx, pins, started, load_start)
        return {
            "schema": SCHEMA,
            "provenance": provenance(),
            "run": {**run, "complete": complete},
            "device_peaks": peaks,
            "peak_rss_mb": max([harness.peak_rss_mb()] + [r.peak_rss_mb or 0 for r in records]),
            "records": [r.to_json() for r in records],
            "failures": failures,
        }

    def save_partial(records, failures):
        write_json(args.json, document(records, failures, complete=False))

    records, failures = run_stages(stages, ctx, save_partial if args.json else None)
    print(format_table(records))
    for f in failures:
        print(f"hvx-bench: stage {f['stage']} FAILED: {f['error']}", file=sys.stderr)
    wall = time.perf_counter() - started
    print(f"hvx-bench: {len(records)} records in {wall:.1f} s (load average {_load_average()})")
    if args.json:
        write_json(args.json, document(records, failures, complete=True))
        print(f"wrote {args.json}")
    return 1 if failures else 0
