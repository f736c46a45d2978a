"""``hvx import-hovernet``: a published HoVer-Net checkpoint -> an hvx model bundle."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("hvx")


def _types(text: str) -> int | list[str]:
    """``--types``: a count (background included) or comma-separated names of types 1.."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    names = [t.strip() for t in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected N or name,name,..., got {text!r}")
    return names


def _colors(text: str) -> list[list[int]]:
    """``--colors``: ``r,g,b;r,g,b;...`` one triple per type name."""
    try:
        out = [[int(v) for v in c.split(",")] for c in text.split(";")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected r,g,b;r,g,b;..., got {text!r}") from None
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``hvx import-hovernet``."""
    p = sub.add_parser(
        "import-hovernet",
        help="convert a published HoVer-Net checkpoint (.tar / .pth) into an hvx bundle",
        description="Read an official HoVer-Net checkpoint (a .tar holding {'desc': "
        "state_dict}) or a TIAToolbox .pth with torch.load(weights_only=True) -- never "
        "unpickling code -- and write an hvx model bundle (safetensors + model.json) that "
        "hvx infer --model BUNDLE runs, with the official tile-mode geometry.",
    )
    p.add_argument("checkpoint", type=Path, help="the .tar or .pth file")
    p.add_argument(
        "--mode",
        required=True,
        choices=("fast", "original"),
        help="fast (256 -> 164: PanNuke, MoNuSAC) or original (270 -> 80: CoNSeP, Kumar, CPM17)",
    )
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument(
        "--types",
        type=_types,
        default=None,
        help="N (types incl. background, checked against the checkpoint) or the names of "
        "types 1.. comma-separated (default type_1, type_2, ...)",
    )
    p.add_argument("--colors", type=_colors, default=None, help="r,g,b;r,g,b;... per type")
    p.add_argument(
        "--mpp",
        type=float,
        default=0.25,
        help="microns per pixel of the training data "
        "(default 0.25: 40x, all published HoVer-Net models)",
    )
    p.add_argument("--licence", default=None, help="licence of the weights (recorded)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Converts; returns 0, or 2 with one error line for a bad checkpoint or argument."""
    from hvx.model.hovernet_checkpoint import import_hovernet

    kwargs = {} if args.licence is None else {"licence": args.licence}
    try:
        out = import_hovernet(
            args.checkpoint,
            args.out,
            mode=args.mode,
            types=args.types,
            class_colors=args.colors,
            mpp=args.mpp,
            **kwargs,
        )
    except (ValueError, TypeError, OSError) as err:
        log.error("%s", err)
        return 2
    log.info("wrote %s", out)
    return 0
