"""Copy a trained bundle into the package as the default model, stored in fp16.

Usage: python scripts/ship_default_model.py RUN/bundle [--out engine/models/default]

The weights are stored as float16 (half the size) and loaded back as float32;
tensors float16 cannot hold stay float32 (``weights.float32_tensors``, printed).
Before replacing the shipped model this checks, on the packaged sample tiles,
that the fp16-stored model stays within the parity bounds against the fp32
original: head outputs max abs error, and PQ of the fp16 instance maps with the
fp32 maps as ground truth. It prints both and refuses when PQ < 0.99. Both
bundles run through ``hvx.Engine.load`` (torch, CPU, fp32): the path users get.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def _run(bundle_path: Path, images: np.ndarray):
    """Heads (numpy) and results of a bundle on ``images`` through ``hvx.Engine``."""
    from hvx.engine import Engine

    engine = Engine.load(bundle_path, backend="torch", device="cpu", precision="fp32")
    heads = engine.heads(images)[0].numpy()
    return [heads.np_prob, heads.hv, heads.tp_prob], engine.postprocess(heads)


def main(argv: list[str] | None = None) -> int:
    """Converts, checks and installs the default bundle; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--out", type=Path, default=Path("engine/models/default"))
    p.add_argument(
        "--dtype",
        choices=("float16", "bfloat16", "float32"),
        default="float16",
        help="storage dtype (float16 refuses tensors beyond its range)",
    )
    args = p.parse_args(argv)

    from hvx.assets import sample_paths
    from hvx.bundle import load_bundle
    from hvx.io import read_image
    from hvx.metrics import pq_stats

    src = load_bundle(args.bundle)
    fp32 = src.build_model("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        staged = src.save_as(
            Path(tmp) / "default",
            fp32,
            provenance={"shipped_from": str(args.bundle)},
            weights_dtype=getattr(torch, args.dtype),
        )
        staged_bundle = load_bundle(staged)
        kept = staged_bundle.float32_tensors
        if kept:
            print(f"kept float32 (beyond {args.dtype}'s range): {', '.join(kept)}")
        images = np.stack([read_image(q) for q in sample_paths()])
        (a, ra), (b, rb) = _run(args.bundle, images), _run(staged, images)
        err = max(float(np.abs(u - v).max()) for u, v in zip(a, b, strict=True))
        pqs = [pq_stats(ra.inst[k], rb.inst[k]).pq for k in range(len(images))]
        print(f"{args.dtype} storage: heads max abs err {err:.2e}; PQ vs fp32 {np.mean(pqs):.4f}")
        counts = [len(t) for t in ra.tables], [len(t) for t in rb.tables]
        print(f"nuclei fp32 {counts[0]} {args.dtype} {counts[1]}")
        if np.mean(pqs) < 0.99:
            msg = f"refusing: {args.dtype} storage changes the instance maps too much"
            print(msg, file=sys.stderr)
            return 1
        if args.out.exists():
            shutil.rmtree(args.out)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, args.out)
    print(f"installed {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
