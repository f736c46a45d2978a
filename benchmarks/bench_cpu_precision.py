"""The network on the CPU: int8 (ONNX Runtime) and bf16 (torch) against fp32 ONNX Runtime.

Paired and interleaved (``hvx.bench.paired``): each round runs fp32 ORT, int8 ORT,
bf16 torch and torch fp32 eager once on the same real tiles (CoNSeP validation
tiles of the bundle, preprocessed by hvx; the shipped samples without data), so
every ratio is taken under the same machine load. One child process per thread
count, with every thread pool (torch, OpenMP, MKL, numba, OpenCV, ORT) pinned to
it before torch is imported. The bundle's accuracy-gate record
(``precision.json``, from ``hvx build BUNDLE --int8 --bf16``) is copied into the
results so each speed sits next to the accuracy it was admitted with.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cpu_precision.py \\
        --bundle /tmp/default-gated --threads 1 2 --rounds 20 \\
        --out benchmarks/results/cpu-precision-DATE.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def _tiles(bundle, data: Path | None, n: int):
    import numpy as np

    from hvx.backends.quantize import gate_tiles

    val, _, desc = gate_tiles(bundle, data, calib=1)
    reps = -(-n // len(val))
    return np.concatenate([val] * reps)[:n], desc["validation"]


def _arrays(heads) -> list:
    """np_prob, hv, tp_prob as float32 arrays, from HeadOutputs or a tuple of tensors."""
    import numpy as np

    if hasattr(heads, "np_prob"):
        heads = (heads.np_prob, heads.hv, heads.tp_prob)
    return [np.asarray(t, dtype=np.float32) for t in heads]


def _impls(bundle, threads: int, cache_dir):
    import torch

    from hvx import _artifacts
    from hvx.backends.cpu_bf16 import CpuBf16Backend
    from hvx.backends.onnxruntime import OnnxRuntimeBackend
    from hvx.backends.quantize import INT8_FILE, cpu_bf16_flags
    from hvx.model import HoVerNetInference

    model = bundle.build_model("cpu")
    fp32 = _artifacts.onnx_for_bundle(bundle, cache_dir, model=model)
    impls = {"ort_fp32": OnnxRuntimeBackend(fp32, threads=threads).run}
    int8 = Path(bundle.path) / INT8_FILE
    if int8.is_file():
        impls["ort_int8"] = OnnxRuntimeBackend(int8, threads=threads, precision="int8").run
    if cpu_bf16_flags():
        impls["torch_bf16"] = CpuBf16Backend(HoVerNetInference(model)).run
    eager = HoVerNetInference(model).eval()

    def torch_fp32(x):
        with torch.no_grad():
            return eager(x)

    impls["torch_fp32"] = torch_fp32
    return impls


def child(args: argparse.Namespace) -> dict:
    """One thread count: pinned pools, interleaved rounds per batch size."""
    import numpy as np
    import torch

    from hvx.bench import harness, paired
    from hvx.bundle import load_bundle
    from hvx.preprocess import preprocess

    pins = paired.pin_threads(args.child)
    bundle = load_bundle(args.bundle)
    tiles, source = _tiles(bundle, args.data, max(args.batch))
    impls = _impls(bundle, args.child, args.cache_dir)
    out = {"threads": pins, "tiles": source, "batches": []}
    for b in args.batch:
        x = preprocess(tiles[:b], bundle.preprocess, device="cpu", dtype=torch.float32)
        ref = _arrays(impls["ort_fp32"](x.numpy()))
        diffs = {}
        for name, fn in impls.items():
            got = fn(x.numpy() if name.startswith("ort") else x)
            diffs[name] = [
                float(np.abs(g - r).max()) for g, r in zip(_arrays(got), ref, strict=True)
            ]
        load0 = paired.loadavg()
        args_of = {k: (x.numpy() if k.startswith("ort") else x) for k in impls}
        fns = {k: (lambda fn=fn, a=args_of[k]: fn(a)) for k, fn in impls.items()}
        times = paired.interleaved(fns, args.rounds, warmup=args.warmup)
        out["batches"].append(
            {
                "batch": b,
                "size": int(x.shape[-1]),
                "loadavg_before": load0,
                "loadavg_after": paired.loadavg(),
                "seconds": {k: paired.summary(v) for k, v in times.items()},
                "ms_per_tile": {k: 1e3 * float(np.median(v)) / b for k, v in times.items()},
                "ratio_vs_ort_fp32": {
                    k: paired.paired_ratio(times["ort_fp32"], v) for k, v in times.items()
                },
                "ratio_vs_torch_fp32": {
                    k: paired.paired_ratio(times["torch_fp32"], v) for k, v in times.items()
                },
                "max_abs_diff_vs_ort_fp32": diffs,
                "raw_seconds": times,
            }
        )
    out["peak_rss_mb"] = harness.peak_rss_mb()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=Path("engine/models/default"))
    p.add_argument("--data", type=Path, default=None, help="CoNSeP folder (default: samples)")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args)))
        return 0
    from hvx.backends.quantize import cpu_bf16_flags, read_record
    from hvx.bench import paired
    from hvx.provenance import provenance, write_json

    runs = []
    for n in args.threads:
        env = dict(os.environ, **{k: str(n) for k in _THREAD_ENV})
        rest = sys.argv[1:] if argv is None else argv
        cmd = [sys.executable, __file__, *rest, "--child", str(n)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode:
            sys.stderr.write(res.stderr)
            return res.returncode
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    doc = {
        "benchmark": "cpu-precision",
        "method": "paired interleaved rounds (ort_fp32, ort_int8, torch_bf16, torch_fp32 in "
        "turn), ratio per round, median and p25-p75; thread pools pinned per child process; "
        "machine shared with other jobs (load averages recorded)",
        "provenance": provenance(),
        "cpu_bf16_flags": cpu_bf16_flags(),
        "bundle": str(args.bundle),
        "gate_record": read_record(args.bundle),
        "rounds": args.rounds,
        "warmup": args.warmup,
        "loadavg_start": paired.loadavg(),
        "runs": runs,
    }
    text = json.dumps(doc, indent=2) + "\n"
    if args.out:
        write_json(args.out, doc)
    for run in runs:
        for b in run["batches"]:
            r = {k: round(v["median"], 2) for k, v in b["ratio_vs_ort_fp32"].items()}
            print(f"threads={run['threads']['requested']} batch={b['batch']} vs ort_fp32: {r}")
    return 0 if text else 1


if __name__ == "__main__":
    sys.exit(main())
