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


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (then exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Returns the parser of the ``hvx`` command with every sub-command."""
    parser = _Parser(
        prog="hvx",
        description="hvx: nuclei instance segmentation and classification for H&E histology.",
    )
    parser.add_argument("--version", action="version", version=f"hvx {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``hvx``; returns the process exit code.

    Any error a sub-command does not handle ends as one line on stderr and exit
    status 2 (130 for Ctrl-C), no traceback unless ``--debug``.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="hvx: %(message)s",
    )
    if args.debug:
        return int(args.func(args) or 0)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(
            f"hvx {args.command}: interrupted; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    except Exception as err:
        print(f"hvx {args.command}: error: {_one_line(err)} (--debug shows where)", file=sys.stderr)
        return 2


def _one_line(err: BaseException) -> str:
    """The error as one line: its message, or its type when it has none."""
    text = " ".join(str(err).split())
    kind = type(err).__name__
    if isinstance(err, MemoryError):
        return f"out of memory ({text or kind}); use smaller --tile / --tile-batch"
    if not text:
        return kind
    return text if isinstance(err, ValueError | OSError) else f"{kind}: {text}"


if __name__ == "__main__":
    sys.exit(main())
