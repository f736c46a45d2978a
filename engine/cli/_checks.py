"""Argument types shared by the ``hvx`` sub-commands: ranges checked with a hint."""

from __future__ import annotations

import argparse
import math

#: Accepted ``--mpp`` range (microns per pixel): 100x oil is about 0.1, 5x about 2.
MPP_RANGE = (0.05, 16.0)


def mpp_arg(text: str) -> float:
    """``--mpp``: a finite number of microns per pixel within :data:`MPP_RANGE`."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    lo, hi = MPP_RANGE
    if not (math.isfinite(v) and lo <= v <= hi):
        raise argparse.ArgumentTypeError(
            f"expected microns per pixel in [{lo}, {hi}], got {text!r} "
            "(it is the pixel size, not the magnification: 40x is about 0.25, 20x about 0.5)"
        )
    return v


def int_at_least(low: int):
    """An argparse type: an int >= ``low``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = low - 1
        if v < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return v

    parse.__name__ = f"int >= {low}"
    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite float > 0."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v
