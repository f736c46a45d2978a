"""The ``hvx`` command: one sub-command per module of this package.

Each sub-command module exposes ``add_parser(subparsers)``, which registers its
parser and sets ``func`` (called with the parsed namespace, returning an exit
code). Heavy imports happen inside ``func`` so ``hvx --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from hvx._version import __version__
from hvx.cli import build, import_hovernet, infer, info, models, slide
from hvx.cli import eval as eval_cmd

# Explicit, ordered registry (no dynamic imports from strings).
_COMMANDS = (info, eval_cmd, build, infer, slide, import_hovernet, models)


def build_parser() -> argparse.ArgumentParser:
    """Returns the parser of the ``hvx`` command with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="hvx",
        description="hvx: nuclei instance segmentation and classification for H&E histology.",
    )
    parser.add_argument("--version", action="version", version=f"hvx {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``hvx``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="hvx: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
