"""Writes the post-processing drivers' inputs into DIR (development tool).

The post-processing benchmark's 16 tiles (256x256, >= 50 nuclei, seed 0):
np.bin (float32 np_prob), hv.bin (float32 hv) and ref.bin (int32 instance
maps of the reference twin).

    python benchmarks/pp_stages/write_inputs.py DIR
"""

import sys

import numpy as np

from hvx._postprocess_ref import instances_from_hv_ref
from hvx.bench.postprocess import realistic_batch


def main(out: str) -> None:
    np_prob, hv, _, _ = realistic_batch(16, 256, seed=0, min_nuclei=50)
    np_prob.astype(np.float32).tofile(f"{out}/np.bin")
    hv.astype(np.float32).tofile(f"{out}/hv.bin")
    ref = [instances_from_hv_ref(a, h) for a, h in zip(np_prob, hv, strict=True)]
    np.stack(ref).astype(np.int32).tofile(f"{out}/ref.bin")


if __name__ == "__main__":
    main(sys.argv[1])
