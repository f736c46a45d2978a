"""Cost of stain normalisation (hvx.stain) against the references it is tested with.

Per image (fit + apply, what ``hvx infer --stain-norm`` adds per input) and per
512 x 512 region (apply only, what ``hvx slide`` adds per region after one fit):
hvx's Reinhard (OpenCV float L*a*b*) against its scikit-image twin
(``reinhard_ref``), hvx's Macenko against torchstain's numpy normaliser (the
oracle of tests/test_stain.py). Wall time, interleaved rounds (each round runs
every case on every image), median with p25-p75 and the per-sample paired ratio
reference / hvx; one child process per thread count (OpenCV, OpenMP and BLAS
threads set before numpy loads), on H&E images (the MoNuSeg ones when present,
else the sample tiles tiled up to the size).

    .venv/bin/python benchmarks/stain_norm.py --threads 1 2 --rounds 5 \
        --out benchmarks/results/stain-norm-cpu-DATE.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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


def _wall(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


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


#: (reference case, hvx case) pairs whose per-sample ratio is reported.
PAIRS = {
    "reinhard": ("reinhard image (scikit-image twin)", "reinhard image (hvx)"),
    "macenko": ("macenko image (torchstain)", "macenko image (hvx)"),
}


def _child(size: int, n_images: int, rounds: int, threads: int) -> dict:
    """One thread count: every case, interleaved; JSON rows."""
    import cv2

    cv2.setNumThreads(threads)
    images, what = _images(size, n_images)
    cases = _cases(images)
    for fn in cases.values():  # warm-up
        fn(0)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            for i in range(len(images)):
                times[name].append(_wall(lambda fn=fn, i=i: fn(i)))
    rows = {
        k: {
            "median_s": float(np.median(v)),
            "p25_p75_s": [float(np.percentile(v, 25)), float(np.percentile(v, 75))],
            "samples": len(v),
        }
        for k, v in times.items()
    }
    speedup = {}
    for m, (ref, fast) in PAIRS.items():
        r = np.array(times[ref]) / np.array(times[fast])
        speedup[m] = {
            "paired_median": float(np.median(r)),
            "p25_p75": [float(np.percentile(r, 25)), float(np.percentile(r, 75))],
        }
    return {"images": what, "rows": rows, "speedup": speedup}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1000, help="image side (default 1000)")
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(_child(args.size, args.images, args.rounds, args.child)))
        return
    per_threads = {}
    for n in args.threads:
        env = {**os.environ, **{v: str(n) for v in _THREAD_VARS}}
        cmd = [sys.executable, __file__, "--child", str(n), "--size", str(args.size)]
        cmd += ["--images", str(args.images), "--rounds", str(args.rounds)]
        res = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True).stdout)
        per_threads[str(n)] = res
        for k, v in res["rows"].items():
            lo, hi = v["p25_p75_s"]
            print(
                f"{n} thr  {k:36s} {1000 * v['median_s']:7.1f} ms ({1000 * lo:.1f}-{1000 * hi:.1f})"
            )
        for m, v in res["speedup"].items():
            print(f"{n} thr  {m}: hvx {v['paired_median']:.2f}x faster (p25-p75 {v['p25_p75']})")
    doc = {
        "benchmark": "stain_norm",
        "size": args.size,
        "rounds": args.rounds,
        "timing": "wall, interleaved; ratio = reference / hvx per sample",
        "load_average": list(os.getloadavg()),
        "threads": per_threads,
        "machine": provenance(),
    }
    if args.out:
        write_json(args.out, doc)


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


if __name__ == "__main__":
    main()
