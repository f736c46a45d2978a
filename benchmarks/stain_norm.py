"""Cost of stain normalisation (hvx.stain) against the references it is tested with.

Per image (fit + apply, what ``hvx infer --stain-norm`` adds per input) and per
512 x 512 region (apply only, what ``hvx slide`` adds per region after one fit):
hvx's Reinhard (OpenCV float L*a*b*) against its scikit-image twin
(``reinhard_ref``), hvx's Macenko against torchstain's numpy normaliser (the
oracle of tests/test_stain.py). Interleaved rounds, one thread, median CPU time
of the calling thread, on H&E images (the MoNuSeg ones when present, else the
sample tiles tiled up to the size).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stain_norm.py --rounds 5 \
        --out benchmarks/results/stain-norm-cpu-DATE.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from hvx.assets import sample_paths
from hvx.io import read_image
from hvx.provenance import provenance, write_json
from hvx.stain import StainNormalizer, reinhard_ref

ROOT = Path(__file__).resolve().parents[1]
MONUSEG = ROOT / ".." / "shared" / "data" / "monuseg" / "images"


def _images(size: int, n: int) -> tuple[list[np.ndarray], str]:
    files = sorted(MONUSEG.glob("*.png"))[:n] if MONUSEG.is_dir() else []
    if files:
        return [read_image(f)[:size, :size] for f in files], f"MoNuSeg ({len(files)} images)"
    tile = read_image(sample_paths()[0])
    reps = -(-size // tile.shape[0])
    return [np.tile(tile, (reps, reps, 1))[:size, :size]] * n, "sample tile repeated"


def _cpu(fn) -> float:
    t = time.thread_time()
    fn()
    return time.thread_time() - t


def _cases(images: list[np.ndarray]):
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

    rein, mac = StainNormalizer("reinhard"), StainNormalizer("macenko")
    oracle = NumpyMacenkoNormalizer()
    oracle.HERef, oracle.maxCRef = np.array(mac.target["he"]), np.array(mac.target["max_c"])
    fits = {m.method: [m.fit(im) for im in images] for m in (rein, mac)}
    return {
        "reinhard image (hvx)": lambda i: rein(images[i]),
        "reinhard image (scikit-image twin)": lambda i: reinhard_ref(images[i], rein.target),
        "macenko image (hvx)": lambda i: mac(images[i]),
        "macenko image (torchstain)": lambda i: oracle.normalize(images[i], stains=False),
        "reinhard 512 region (apply)": lambda i: rein.apply(
            images[i][:512, :512], fits["reinhard"][i]
        ),
        "macenko 512 region (apply)": lambda i: mac.apply(
            images[i][:512, :512], fits["macenko"][i]
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1000, help="image side (default 1000)")
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    images, what = _images(args.size, args.images)
    cases = _cases(images)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):  # interleaved: each round runs every case on every image
        for name, fn in cases.items():
            for i in range(len(images)):
                times[name].append(_cpu(lambda fn=fn, i=i: fn(i)))
    rows = {k: {"median_s": float(np.median(v)), "samples": len(v)} for k, v in times.items()}
    for k, v in rows.items():
        print(f"{k:38s} {1000 * v['median_s']:8.1f} ms")
    doc = {
        "benchmark": "stain_norm",
        "images": what,
        "size": args.size,
        "rounds": args.rounds,
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": list(os.getloadavg()),
        "rows": rows,
        "speedup": {
            "reinhard": rows["reinhard image (scikit-image twin)"]["median_s"]
            / rows["reinhard image (hvx)"]["median_s"],
            "macenko": rows["macenko image (torchstain)"]["median_s"]
            / rows["macenko image (hvx)"]["median_s"],
        },
        "machine": provenance(),
    }
    if args.out:
        write_json(args.out, doc)


if __name__ == "__main__":
    main()
