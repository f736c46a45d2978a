"""Bench stage ``e2e``: ``hvx.Engine.infer`` vs the baseline pipeline, tiles to nuclei tables.

Same real tiles (CoNSeP), same bundle, same device for the network:

- hvx: ``engine.infer(tiles)`` = hvx preprocessing (numba on a CPU, Triton on a
  GPU) -> the Engine's backend -> native C++ post-processing on all cores;
- baseline: OpenCV preprocessing (``impl="reference"``) -> torch fp32 eager ->
  the Python reference post-processing (``instances_from_hv_ref`` +
  ``instance_table_ref``, one OpenCV thread), tile by tile.

The two pipelines are timed in alternation (``hvx.bench.paired``); the speed-up
is the median per-round ratio (p25-p75 in ``extra.paired_ratio``).

Post-processing time depends on how many nuclei the network finds: with a
random-weight bundle (the default without ``--model``) few are found, so the
records carry ``nuclei_per_tile`` for both pipelines and the weights used.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from hvx.bench import _inputs, _models, harness, paired
from hvx.bench.network import flop_rate, load_engine, torch_threads

NAME = "e2e"
HELP = (
    "Engine.infer (preprocess -> network -> postprocess) vs OpenCV + torch fp32 eager "
    "+ the Python reference post-processing"
)


def _e2e_variants(ctx: harness.BenchContext) -> harness.BenchContext:
    """On a CPU without --variant, e2e runs the fast variant only (a short benchmark)."""
    if ctx.device == "cpu" and not ctx.options.get("variants") and not ctx.options.get("model"):
        return dataclasses.replace(
            ctx, options={**ctx.options, "variants": _models.CPU_VARIANTS[:1]}
        )
    return ctx


def run(ctx: harness.BenchContext) -> list[harness.Record]:
    """Measures each model and batch size; returns baseline and hvx records."""
    ctx = _e2e_variants(ctx)
    records: list[harness.Record] = []
    with tempfile.TemporaryDirectory(prefix="hvx-bench-") as tmp, torch_threads(ctx):
        for model in _models.bench_models(ctx, Path(tmp)):
            records += _run_model(ctx, model, Path(tmp))
    return records


def baseline_pipeline(tiles: np.ndarray, bundle, eager, device: str) -> int:
    """The pipeline hvx replaces; returns the number of nuclei found.

    Args:
        tiles: ``ndarray[N, H, W, 3] uint8`` RGB, H and W multiples of the model's
            ``size_multiple``.
        bundle: The ``ModelBundle`` (its preprocess/postprocess configs are used).
        eager: ``HoVerNetInference`` in fp32 on ``device``.
        device: Where the network runs.
    """
    import cv2
    import torch

    from hvx._postprocess_ref import instance_table_ref, instances_from_hv_ref
    from hvx.preprocess import preprocess

    x = preprocess(tiles, bundle.preprocess, impl="reference").to(device)
    with torch.no_grad():
        np_prob, hv, tp = (t.float().cpu().numpy() for t in eager(x))
    labels = np.argmax(tp, axis=1)
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    found = 0
    try:
        for i in range(len(tiles)):
            inst = instances_from_hv_ref(np_prob[i], hv[i], bundle.postprocess)
            found += len(instance_table_ref(inst, labels[i]))
    finally:
        cv2.setNumThreads(before)
    return found


def _run_model(
    ctx: harness.BenchContext, model: _models.BenchModel, tmp: Path
) -> list[harness.Record]:
    import torch

    from hvx.bundle import load_bundle
    from hvx.model import HoVerNetInference

    bundle = load_bundle(model.bundle)
    engine = load_engine(ctx, model.bundle, tmp)
    size = _models.round_up(_models.stage_size(ctx), engine.size_multiple)
    eager = HoVerNetInference(bundle.build_model(ctx.device, torch.float32)).eval()
    flops = harness.flops_per_tile(bundle.variant, size, bundle.in_chans, bundle.num_types)
    cuda = ctx.device.startswith("cuda")
    hvx_impl = f"engine-{engine.backend}-{engine.precision}"
    threads = ctx.options.get("threads")  # None: the Engine's default (all cores)

    def pair(batch: int) -> tuple[harness.Record, harness.Record]:
        tiles, source = _inputs.real_tiles(batch, size)
        found = {"baseline": baseline_pipeline(tiles, bundle, eager, ctx.device)}
        found["hvx"] = sum(len(t) for t in engine.infer(tiles, num_threads=threads).tables)
        extra = {
            **model.describe(),
            "inputs": source,
            "gflop_per_tile": flops / 1e9,
            "threads": threads or torch.get_num_threads(),
        }
        base, mine = paired.measure_pair(
            NAME,
            (
                "opencv+torch-fp32+python-ref",
                lambda: baseline_pipeline(tiles, bundle, eager, ctx.device),
            ),
            (hvx_impl, lambda: engine.infer(tiles, num_threads=threads)),
            batch,
            size,
            ctx,
            # the reference was warmed up by the count above and is slow
            **{
                "opencv+torch-fp32+python-ref": 0,
                hvx_impl: max(ctx.warmup, 3) if cuda else ctx.warmup,
            },
        )
        base.extra = {
            **extra,
            "nuclei_per_tile": found["baseline"] / batch,
            "postprocess_threads": 1,
        }
        mine.extra = {
            **extra,
            **mine.extra,
            "nuclei_per_tile": found["hvx"] / batch,
            "backend": engine.backend,
            "precision": engine.precision,
            **flop_rate(flops, mine.tiles_per_s, ctx.device),
        }
        return base, mine

    return _models.sweep_batches(ctx, bundle.variant, pair, "e2e")
