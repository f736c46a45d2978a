"""``hvx build``: export a model bundle to ONNX and (on a GPU) a TensorRT plan.

The plan is FP16 when fp16 keeps the model's results on this GPU
(:func:`hvx.precision.check_fp16`), else TF32; ``--fp16`` / ``--fp32`` force one.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
from pathlib import Path

from hvx import _artifacts
from hvx.backends.plan import PlanSettings, sidecar_path
from hvx.backends.quantize import build_lowp

log = logging.getLogger("hvx.build")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``hvx build``."""
    p = sub.add_parser(
        "build",
        help="export a model bundle to ONNX and build a TensorRT plan",
        description="Export BUNDLE to ONNX (dynamic batch and spatial axes, softmax inside, "
        "validated with the ONNX checker and ONNX Runtime against torch), and with --tensorrt "
        "build a TensorRT plan for this GPU. Results are cached under --cache-dir; --out "
        "copies them to a folder.",
    )
    p.add_argument("bundle", type=Path, help="model bundle folder (model.json + weights)")
    p.add_argument("--onnx", action="store_true", help="export ONNX (default when no --tensorrt)")
    p.add_argument("--tensorrt", action="store_true", help="build a TensorRT plan (needs a GPU)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument(
        "--fp16",
        dest="precision",
        action="store_const",
        const="fp16",
        default="auto",
        help="fp16 plan even if fp16 changes the model's results (default: fp16 when "
        "hvx.precision.check_fp16 on this GPU finds it keeps the instance maps, else TF32)",
    )
    prec.add_argument(
        "--fp32", dest="precision", action="store_const", const="fp32", help="strict fp32 plan"
    )
    d = PlanSettings()  # the profile Engine.load builds on demand: same cache key
    for k, name in enumerate(("min", "opt", "max")):
        shape = (d.min_shape, d.opt_shape, d.max_shape)[k]
        p.add_argument(f"--{name}-batch", type=int, default=shape[0], help=f"default {shape[0]}")
        p.add_argument(
            f"--{name}-size", type=int, default=shape[1], help=f"tile edge, default {shape[1]}"
        )
    p.add_argument(
        "--workspace-gb",
        type=float,
        default=d.workspace_bytes / 2**30,
        help=f"TensorRT workspace limit, default {d.workspace_bytes / 2**30:g}",
    )
    p.add_argument("--cache-dir", type=Path, default=None, help="default $HVX_CACHE_DIR")
    p.add_argument("--out", type=Path, default=None, help="also copy model.onnx / model.plan here")
    p.add_argument("--force", action="store_true", help="rebuild a cached plan")
    p.add_argument(
        "--int8",
        action="store_true",
        help="quantize for the CPU (ONNX Runtime static QDQ int8) into BUNDLE/model.int8.onnx, "
        "run the accuracy gate against fp32 and record it in BUNDLE/precision.json",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="run the CPU bf16 path (needs avx512_bf16/amx_bf16) through the accuracy gate "
        "and record it in BUNDLE/precision.json",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="CoNSeP-layout folder (images/<source>_<k>.png) for the gate's validation tiles "
        "(the bundle's val_sources) and int8 calibration tiles (the others); default: the "
        "shipped sample tiles",
    )
    p.set_defaults(func=run)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover (or planted symlink) is removed, not followed
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


def run(args: argparse.Namespace) -> int:
    """Exports / builds; returns 0, or 2 for bad arguments or a failed build."""
    from hvx.bundle import load_bundle

    if args.out is not None and args.out.exists() and not args.out.is_dir():
        log.error("expected --out to be a folder, got a file: %s", args.out)
        return 2
    try:
        bundle = load_bundle(args.bundle)
        settings = PlanSettings(
            (args.min_batch, args.min_size, args.min_size),
            (args.opt_batch, args.opt_size, args.opt_size),
            (args.max_batch, args.max_size, args.max_size),
            {"fp32": (), "fp16": ("fp16",), "auto": ("fp16",)}[args.precision],
            int(args.workspace_gb * 2**30),
        )
    except (FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 2
    if args.int8 or args.bf16:
        return _build_lowp(args, bundle)
    if args.tensorrt:  # fail before the (slow) export when TensorRT cannot run here
        from hvx.backends.plan import PlanTarget

        try:
            PlanTarget.current()
        except (ImportError, RuntimeError) as err:
            log.error("TensorRT plan not built: %s", err)
            return 2
        if args.precision == "auto":  # what Engine.load(precision="auto") would pick
            from hvx.precision import auto_cuda_precision

            if auto_cuda_precision(bundle, "cuda", args.bundle) == "fp32":
                settings = dataclasses.replace(settings, precision=("tf32",))
    onnx_path = _artifacts.onnx_for_bundle(bundle, args.cache_dir)
    print(f"onnx: {onnx_path}")
    if args.out:
        _copy(onnx_path, args.out / "model.onnx")
    if not args.tensorrt:
        return 0
    try:
        plan = _artifacts.plan_for_bundle(bundle, settings, args.cache_dir, force=args.force)
    except (ImportError, RuntimeError, ValueError) as err:
        log.error("TensorRT plan not built: %s", err)
        return 2
    print(f"plan: {plan}")
    if args.out:
        _copy(plan, args.out / "model.plan")
        _copy(sidecar_path(plan), args.out / "model.plan.json")
    return 0


def _build_lowp(args: argparse.Namespace, bundle) -> int:
    """``--int8`` / ``--bf16``: gate each asked-for CPU precision; 0 if all passed."""
    import json

    failed = False
    for precision in ("int8", "bf16"):
        if not getattr(args, precision):
            continue
        try:
            entry = build_lowp(bundle, precision, data=args.data, cache_dir=args.cache_dir)
        except (ImportError, OSError, ValueError) as err:
            log.error("%s not built: %s", precision, err)
            return 2
        print(f"{precision}: " + json.dumps(entry["gate"]))
        failed |= not entry["passed"]
    return 1 if failed else 0
