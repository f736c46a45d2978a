"""Make a bundle's network float16-safe without changing it: ``python -m hvx.training.fp16``.

``python -m hvx.training.fp16 SRC DST`` reads the model bundle SRC, rescales its
conv -> BatchNorm pairs whose running statistics do not fit float16
(``hvx.model._net.rebalance_for_fp16``: the same function in float32, up to
~1e-6), and writes the result to DST (float32 weights, the same metadata, the
provenance recording ``fp16_rebalanced``), then prints
``hvx.precision.check_fp16`` before and after. Bundles written by ``hvx-train``
are rebalanced already; this is for older ones.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "rebalance_bundle"]


def rebalance_bundle(src: str | Path, dst: str | Path) -> list[str]:
    """Writes a float16-safe copy of bundle ``src`` to ``dst``; returns the rescaled layers.

    Raises:
        ValueError: If ``dst`` exists already.
    """
    from hvx.bundle import load_bundle
    from hvx.model._net import rebalance_for_fp16

    if Path(dst).exists():
        raise ValueError(f"expected a new folder for the copy, got an existing {dst}")
    b = load_bundle(src)
    model = b.build_model("cpu").eval()
    changed = rebalance_for_fp16(model)
    b.save_as(dst, model, provenance={"fp16_rebalanced": changed})
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m hvx.training.fp16", description=__doc__)
    p.add_argument("src", type=Path, help="model bundle folder")
    p.add_argument("dst", type=Path, help="new folder for the float16-safe copy")
    args = p.parse_args(argv)
    from hvx.bundle import load_bundle
    from hvx.precision import check_fp16

    try:
        changed = rebalance_bundle(args.src, args.dst)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"rescaled: {', '.join(changed) or 'nothing (already float16-safe)'}")
    for name, path in (("before", args.src), ("after", args.dst)):
        b = load_bundle(path)
        chk = check_fp16(b.build_model("cpu"), b.preprocess, b.postprocess)
        print(f"fp16 vs fp32 instance maps {name}: PQ {chk.pq:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
