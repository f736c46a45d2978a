"""``hvx-train``: train a ConvNeXt HoVer-Net and write a model bundle."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """Returns the ``hvx-train`` parser."""
    return argparse.ArgumentParser(
        prog="hvx-train",
        description="Train a ConvNeXt HoVer-Net on CoNiC- or CoNSeP-format data and "
        "write a model bundle (weights.safetensors + model.json).",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``hvx-train``; returns the exit code."""
    build_parser().parse_args(argv)
    print("hvx-train: the trainer is not built yet (issue 6)", file=sys.stderr)
    return 2
