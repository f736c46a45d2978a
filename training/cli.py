"""``hvx-train``: train a ConvNeXt HoVer-Net and write a model bundle.

The YAML config sets the defaults of the command-line options (timm-style, two
passes: ``--config`` is read first, then the full parser is built with the
config's values as defaults), so an option left out never overrides the YAML.
``--set section.key=value`` overrides any other field (the value is parsed as
YAML). The resolved config is written to ``OUT/config.yaml``.

Examples::

    hvx-train --config cpu --data ../shared/data/consep --out runs/cpu --max-minutes 10
    hvx-train --config cpu --data ../shared/data/consep --out runs/cpu --resume
    hvx-train --config paper --data conic/ --out runs/paper --set optim.rho=0.1
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from hvx.training import trainer as trainer_mod

#: ``(option, config key, type, help)`` of the options that override config fields.
_OVERRIDES = (
    ("--epochs", "epochs", int, "number of epochs"),
    ("--seed", "seed", int, "seed of init, data order and augmentation"),
    ("--batch-size", "batch_size", int, "training tiles per step"),
    ("--lr", "optim.lr", float, "AdamW learning rate"),
    ("--num-workers", "num_workers", int, "DataLoader worker processes"),
    ("--val-every", "val_every", int, "validate every N epochs"),
)


def _base_parser(add_help: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hvx-train",
        add_help=add_help,
        description="Train a ConvNeXt HoVer-Net on CoNiC- or CoNSeP-format data and "
        "write a model bundle (weights.safetensors + model.json).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--config",
        help="shipped config name (see --list-configs) or YAML path; with --resume it "
        "defaults to OUT/config.yaml",
    )
    p.add_argument("--list-configs", action="store_true", help="list shipped configs and exit")
    return p


def build_parser(config=None) -> argparse.ArgumentParser:
    """Returns the ``hvx-train`` parser, its override defaults taken from ``config``."""
    p = _base_parser(add_help=True)
    p.add_argument(
        "--data",
        help="dataset folder (CoNiC images.npy/labels.npy or CoNSeP-style); not with a "
        "config that lists data.datasets",
    )
    p.add_argument("--out", help="run folder: config.yaml, checkpoints/, log.jsonl, bundle/")
    p.add_argument("--max-minutes", type=float, help="time budget; stops cleanly with a bundle")
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoints/last")
    p.add_argument(
        "--force",
        action="store_true",
        help="with --resume: continue on different --data (both datasets are recorded)",
    )
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument(
        "--preprocess-impl",
        default="auto",
        choices=("auto", "triton", "numba", "reference"),
        help="preprocessing implementation (auto: Triton on CUDA, numba on the CPU; "
        "all give the same input)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's); a resumed CPU run is bit-exact only "
        "with the same count",
    )
    flat = _flat(config.to_dict()) if config is not None else {}
    for option, key, typ, help_ in _OVERRIDES:
        p.add_argument(option, type=typ, default=flat.get(key), help=f"{help_} ({key})")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set optim.sam=false (YAML value)",
    )
    return p


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "class_map":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``hvx-train``; returns the exit code (0 done, 130 interrupted, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--evaluate" or a.startswith("--evaluate=") for a in argv):
        from hvx.training.evaluate import main as evaluate_main

        return evaluate_main(argv)
    if any(a == "--tune-postprocess" or a.startswith("--tune-postprocess=") for a in argv):
        from hvx.training.tune import main as tune_main

        return tune_main(argv)
    first, _ = _base_parser(add_help=False).parse_known_args(argv)
    from hvx.training.config import list_configs, load_config

    if first.list_configs:
        print("\n".join(list_configs()))
        return 0
    try:
        config_src = first.config
        if config_src is None:
            pre = argparse.ArgumentParser(add_help=False)
            pre.add_argument("--out")
            pre.add_argument("--resume", action="store_true")
            run, _ = pre.parse_known_args(argv)
            if run.resume and run.out:
                config_src = str(Path(run.out) / "config.yaml")
        config = load_config(config_src) if config_src is not None else None
    except ValueError as e:
        print(f"hvx-train: error: {e}", file=sys.stderr)
        return 2
    parser = build_parser(config)
    args = parser.parse_args(argv)
    if config is None:
        parser.error("--config is required (a shipped name or a YAML path)")
    if args.out is None or (args.data is None and config.data.datasets is None):
        parser.error("--out and --data (or data.datasets in the config) are required")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads: expected >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
        import cv2

        cv2.setNumThreads(args.threads)
    if args.debug:
        result = _train(args, config)
    else:
        try:
            result = _train(args, config)
        except KeyboardInterrupt:
            print("hvx-train: interrupted; resume with --resume", file=sys.stderr)
            return 130
        except Exception as e:  # one line, exit status 2 (--debug shows the traceback)
            msg = " ".join(str(e).split()) or type(e).__name__
            if not isinstance(e, ValueError | OSError):
                msg = f"{type(e).__name__}: {msg}"
            print(f"hvx-train: error: {msg} (--debug shows where)", file=sys.stderr)
            return 2
    if result.status == "interrupted":
        print(f"hvx-train: interrupted at step {result.global_step}; resume with --resume")
        return 130
    best = result.best or {}
    print(
        f"hvx-train: {result.status} after {result.epochs_done} epochs "
        f"({result.global_step} steps); best PQ {best.get('pq', float('nan')):.4f} "
        f"mPQ+ {best.get('mpq_plus', float('nan')):.4f}; bundle {result.bundle}"
    )
    return 0


def _train(args: argparse.Namespace, config):
    """Builds the Trainer (checking a resume's data) and runs it; returns its result."""
    from hvx.training.checkpoint import check_resume_data

    overrides = {key: getattr(args, opt[2:].replace("-", "_")) for opt, key, *_ in _OVERRIDES}
    config = config.replace({**overrides, **_parse_set(args.set)})
    out = Path(args.out)
    source = None
    if args.resume or not (out / "checkpoints" / "last.safetensors").exists():
        folders = (
            [args.data] if args.data is not None else [d["path"] for d in config.data.datasets]
        )
        for folder in folders:
            if not Path(folder).is_dir():
                what = "--data" if args.data is not None else "data.datasets"
                raise FileNotFoundError(f"expected a dataset folder for {what}, got {folder}")
        source = check_resume_data(out, folders, force=args.force, fresh=not args.resume)

    trainer = trainer_mod.Trainer(
        config,
        args.data,
        args.out,
        device=args.device,
        max_minutes=args.max_minutes,
        resume=args.resume,
        progress=not args.no_progress,
        preprocess_impl=args.preprocess_impl,
    )
    if source is not None:
        trainer.data_source = source  # the bundle's provenance names every dataset used
    return trainer.fit()


if __name__ == "__main__":
    sys.exit(main())
