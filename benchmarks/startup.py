"""Start-up of a one-tile run: import, Engine.load and the first infer, per precision.

Each sample is a fresh Python process (what ``hvx infer`` on one tile pays), timed
from inside in phases: ``import hvx`` (+ torch, which hvx imports), ``Engine.load``
(bundle read, ONNX export cache hit or miss, session or trace set-up) and the
first ``infer`` of one 256x256 sample tile (bf16 traces and freezes here). The
variants run in turn, round after round (interleaved), one thread each. Also
records whether torch was imported by the ORT path.

    .venv/bin/python benchmarks/startup.py --rounds 5 --out benchmarks/results/startup-DATE.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import hvx
t1 = time.perf_counter()
from hvx.assets import sample_paths
from hvx.io import read_image
img = read_image(sample_paths()[0])
t2 = time.perf_counter()
eng = hvx.Engine.load(precision=sys.argv[1], cache_dir=sys.argv[2])
t3 = time.perf_counter()
res = eng.infer(img)
t4 = time.perf_counter()
res2 = eng.infer(img)
t5 = time.perf_counter()
print(json.dumps({"import_hvx": t1 - t0, "load": t3 - t2, "first_infer": t4 - t3,
                  "second_infer": t5 - t4, "total": t4 - t0 - (t2 - t1),
                  "backend": eng.backend, "precision": eng.precision,
                  "torch_imported": "torch" in sys.modules, "nuclei": len(res.tables[0])}))
"""


BREAKDOWN = r"""
import json, sys, time
marks = [("start", time.perf_counter())]
import torch
marks.append(("import_torch", time.perf_counter()))
import onnxruntime
marks.append(("import_onnxruntime", time.perf_counter()))
from hvx.bundle import load_bundle
marks.append(("import_hvx_bundle (hvx.model, timm)", time.perf_counter()))
from hvx.assets import default_model_path
b = load_bundle(default_model_path())
marks.append(("load_bundle (read, sha256)", time.perf_counter()))
m = b.build_model("cpu")
marks.append(("build_model", time.perf_counter()))
from hvx import _artifacts
p = _artifacts.onnx_for_bundle(b, sys.argv[1], model=m)
marks.append(("onnx_for_bundle (cache hit)", time.perf_counter()))
from hvx.backends.onnxruntime import OnnxRuntimeBackend
OnnxRuntimeBackend(p)
marks.append(("ort_session", time.perf_counter()))
print(json.dumps({k: t - marks[i][1] for i, (k, t) in enumerate(marks[1:])}))
"""


def _breakdown(cache: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", BREAKDOWN, cache],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _sample(precision: str, cache: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, precision, cache],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    doc["process_wall"] = time.perf_counter() - t
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--precisions", nargs="+", default=["fp32", "auto"])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    from hvx.bench import paired
    from hvx.provenance import provenance, write_json

    load0 = paired.loadavg()
    with tempfile.TemporaryDirectory(prefix="hvx-startup-") as cache:
        cold = _sample("fp32", cache)  # empty cache: the ONNX export happens here
        samples: dict[str, list[dict]] = {k: [] for k in args.precisions}
        breakdown: list[dict] = []
        for _ in range(args.rounds):
            for prec in args.precisions:
                samples[prec].append(_sample(prec, cache))
            breakdown.append(_breakdown(cache))
    phases = ("import_hvx", "load", "first_infer", "second_infer", "total", "process_wall")
    doc = {
        "benchmark": "startup",
        "method": "fresh process per sample, phases timed inside; precisions interleaved; "
        "OMP/MKL/numba 1 thread; default model, one 256x256 sample tile; the first sample "
        "(cold) runs with an empty ONNX cache; load_breakdown_fp32_ort times the load's steps "
        "one by one in a fresh process (warm cache)",
        "provenance": provenance(),
        "loadavg_before": load0,
        "loadavg_after": paired.loadavg(),
        "cold_cache_fp32": cold,
        "load_breakdown_fp32_ort": {
            k: paired.summary([b[k] for b in breakdown]) for k in breakdown[0]
        },
        "warm": {
            prec: {
                "backend": s[0]["backend"],
                "precision": s[0]["precision"],
                "torch_imported": s[0]["torch_imported"],
                **{ph: paired.summary([x[ph] for x in s]) for ph in phases},
            }
            for prec, s in samples.items()
        },
        "raw": samples,
    }
    if args.out:
        write_json(args.out, doc)
    cold_s = {k: round(v, 2) for k, v in cold.items() if isinstance(v, float)}
    print(f"cold fp32: {json.dumps(cold_s)}")
    print({k: round(v["median"], 2) for k, v in doc["load_breakdown_fp32_ort"].items()})
    for prec, d in doc["warm"].items():
        print(prec, d["backend"], d["precision"], {ph: round(d[ph]["median"], 2) for ph in phases})
    return 0


if __name__ == "__main__":
    sys.exit(main())
