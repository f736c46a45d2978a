"""Start-up of a one-tile run: import, Engine.load and the first infer, per precision and tree.

Each sample is a fresh Python process (what ``hvx infer`` on one tile pays), timed
from inside in phases: ``import hvx``, ``Engine.load`` (bundle read and check,
ONNX export cache hit or miss, session or trace set-up) and the first ``infer``
of one 256x256 sample tile (bf16 traces and freezes here). Each sample also
records which heavy modules were imported by the end of ``Engine.load``
(timm, torchvision, torch._dynamo, torch).

``--revs A B ...`` compares the ``hvx`` package at git revisions (``git archive``
of ``engine/`` into a temporary folder, run with ``PYTHONPATH`` in front of the
editable install; the built ``_native`` extension is copied in, it does not
change start-up); "WORKTREE" is the working tree. Trees and precisions run in
turn, round after round (interleaved), one thread each, each tree with its own
warm cache ($HVX_CACHE_DIR and ``cache_dir``: ONNX exports, state signatures);
one cold sample per tree first fills it. The paired ratio is, per round, the
first tree's time over the other tree's (> 1: the other tree is faster).

    .venv/bin/python benchmarks/startup.py --revs bbc86af HEAD --rounds 5 \
        --out benchmarks/results/startup-DATE.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("timm", "torchvision", "torch._dynamo", "torch", "onnxruntime")

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
loaded = {m: m in sys.modules for m in json.loads(sys.argv[3])}
res = eng.infer(img)
t4 = time.perf_counter()
res2 = eng.infer(img)
t5 = time.perf_counter()
print(json.dumps({"import_hvx": t1 - t0, "load": t3 - t2, "first_infer": t4 - t3,
                  "second_infer": t5 - t4, "total": t4 - t0 - (t2 - t1),
                  "backend": eng.backend, "precision": eng.precision,
                  "imported_by_load": loaded, "nuclei": len(res.tables[0]),
                  "hvx_file": hvx.__file__}))
"""

BREAKDOWN = r"""
import json, sys, time
marks = [("start", time.perf_counter())]
import torch
marks.append(("import_torch", time.perf_counter()))
import onnxruntime
marks.append(("import_onnxruntime", time.perf_counter()))
from hvx.bundle import load_bundle
marks.append(("import_hvx_bundle", time.perf_counter()))
from hvx.assets import default_model_path
b = load_bundle(default_model_path())
marks.append(("load_bundle (read, sha256, architecture check)", time.perf_counter()))
from hvx import _artifacts
p = _artifacts.onnx_for_bundle(b, sys.argv[1])
marks.append(("onnx_for_bundle (cache hit)", time.perf_counter()))
from hvx.backends.onnxruntime import OnnxRuntimeBackend
OnnxRuntimeBackend(p)
marks.append(("ort_session", time.perf_counter()))
out = {k: t - marks[i][1] for i, (k, t) in enumerate(marks[1:])}
out["timm_imported"] = "timm" in sys.modules
print(json.dumps(out))
"""


def _tree(rev: str, base: Path) -> Path | None:
    """A folder holding ``hvx`` (``engine/`` at ``rev``), or None for the working tree."""
    if rev == "WORKTREE":
        return None
    folder = base / rev.replace("/", "_")
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "engine"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "engine").rename(folder / "hvx")
    for so in (ROOT / "engine").glob("_native*.so"):
        shutil.copy2(so, folder / "hvx" / so.name)
    return folder


def _run(code: str, args: list[str], tree: Path | None, cache: str) -> dict:
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        NUMBA_NUM_THREADS="1",
        HVX_CACHE_DIR=cache,
    )
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    doc["process_wall"] = time.perf_counter() - t
    return doc


IMPORTTIME = r"""
import sys
import hvx
hvx.Engine.load(precision=sys.argv[1], cache_dir=sys.argv[2])
"""


def _importtime(tree: Path | None, cache: str, precision: str, top: int = 12) -> dict:
    """``python -X importtime`` of import + ``Engine.load``: the costliest top-level imports."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HVX_CACHE_DIR=cache)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", IMPORTTIME, precision, cache],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cum_us, name = line.split("|")
        rows.append((name.rstrip()[1:], int(cum_us)))  # "import time: self | cum | name"
    outer = [(n, us) for n, us in rows if not n.startswith(" ")]  # top level only
    outer.sort(key=lambda r: -r[1])
    return {
        "precision": precision,
        "top_level_cumulative_s": {n: us / 1e6 for n, us in outer[:top]},
        "modules_imported": len(rows),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--precisions", nargs="+", default=["fp32", "auto"])
    p.add_argument("--revs", nargs="+", default=["WORKTREE"], help="git revisions or WORKTREE")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    from hvx.bench import paired
    from hvx.provenance import provenance, write_json

    shas = {
        r: r
        if r == "WORKTREE"
        else subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", r], capture_output=True, text=True, check=True
        ).stdout.strip()
        for r in args.revs
    }
    load0 = paired.loadavg()
    with tempfile.TemporaryDirectory(prefix="hvx-startup-") as tmp:
        base = Path(tmp)
        trees = {r: _tree(r, base) for r in args.revs}
        caches = {r: str(base / f"cache-{i}") for i, r in enumerate(args.revs)}
        heavy = json.dumps(HEAVY)
        cold = {r: _run(CHILD, ["fp32", caches[r], heavy], trees[r], caches[r]) for r in args.revs}
        samples = {r: {k: [] for k in args.precisions} for r in args.revs}
        breakdown: dict[str, list[dict]] = {r: [] for r in args.revs}
        for _ in range(args.rounds):
            for r in args.revs:
                for prec in args.precisions:
                    samples[r][prec].append(
                        _run(CHILD, [prec, caches[r], heavy], trees[r], caches[r])
                    )
                breakdown[r].append(_run(BREAKDOWN, [caches[r]], trees[r], caches[r]))
        importtime = {r: _importtime(trees[r], caches[r], "fp32") for r in args.revs}
    phases = ("import_hvx", "load", "first_infer", "second_infer", "total", "process_wall")
    first = args.revs[0]
    doc = {
        "benchmark": "startup",
        "method": "fresh process per sample, phases timed inside; trees and precisions "
        "interleaved round by round; OMP/MKL/numba 1 thread; default model, one 256x256 sample "
        "tile; each tree's first (cold) sample fills its own empty cache; load_breakdown times "
        "the fp32 ORT load's steps one by one in a fresh process (warm cache); "
        f"paired_vs_{first}: per round, {first}'s time over this tree's (> 1: faster)",
        "revisions": shas,
        "provenance": provenance(),
        "loadavg_before": load0,
        "loadavg_after": paired.loadavg(),
        "trees": {},
    }
    for r in args.revs:
        doc["trees"][r] = {
            "sha": shas[r],
            "cold_cache_fp32": cold[r],
            "load_breakdown_fp32_ort": {
                k: paired.summary([b[k] for b in breakdown[r]])
                for k, v in breakdown[r][0].items()
                if isinstance(v, float)
            },
            "breakdown_timm_imported": [b["timm_imported"] for b in breakdown[r]],
            "importtime_fp32_load": importtime[r],
            "warm": {
                prec: {
                    "backend": s[0]["backend"],
                    "precision": s[0]["precision"],
                    "imported_by_load": s[0]["imported_by_load"],
                    **{ph: paired.summary([x[ph] for x in s]) for ph in phases},
                    **(
                        {}
                        if r == first
                        else {
                            f"paired_vs_{first}": {
                                ph: paired.paired_ratio(
                                    [x[ph] for x in samples[first][prec]], [x[ph] for x in s]
                                )
                                for ph in ("load", "total", "process_wall")
                            }
                        }
                    ),
                }
                for prec, s in samples[r].items()
            },
            "raw": samples[r],
        }
    if args.out:
        write_json(args.out, doc)
    for r, d in doc["trees"].items():
        print(f"== {r} ({shas[r][:9]})")
        print({k: round(v["median"], 2) for k, v in d["load_breakdown_fp32_ort"].items()})
        print(
            "importtime:",
            {
                k: round(v, 2)
                for k, v in d["importtime_fp32_load"]["top_level_cumulative_s"].items()
            },
        )
        for prec, w in d["warm"].items():
            med = {ph: round(w[ph]["median"], 2) for ph in phases}
            print(prec, w["backend"], w["precision"], med, "imported:", w["imported_by_load"])
            if f"paired_vs_{first}" in w:
                print("   paired", json.dumps(w[f"paired_vs_{first}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
