"""``hvx info``: what this machine can run (see :mod:`hvx.features`)."""

from __future__ import annotations

import argparse
import json

from hvx._version import __version__
from hvx.features import features, machine_summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``hvx info``."""
    p = sub.add_parser(
        "info",
        help="show hvx's version and the capabilities found on this machine",
        description="Probe CUDA, Triton, TensorRT, ONNX Runtime, numba, timm and the "
        "native extension, and print what is available and why not.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prints the capability probe."""
    feats = features()
    if args.json:
        doc = {
            "hvx": __version__,
            "machine": machine_summary(),
            "features": {
                name: {"available": p.available, "version": p.version, "detail": p.detail}
                for name, p in feats.rows()
            },
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(f"hvx {__version__}")
    for key, value in machine_summary().items():
        print(f"  {key:<12} {value}")
    print("capabilities:")
    for name, p in feats.rows():
        mark = "yes" if p.available else "no "
        extra = " ".join(s for s in (p.version, f"({p.detail})" if p.detail else "") if s)
        print(f"  {name:<12} {mark} {extra}")
    return 0
