"""Bench stage ``network``: the network as ``hvx.Engine`` runs it vs torch fp32 eager.

Per variant (``--variant``; default: small ones on a CPU, the paper's
``convnext_small`` and a fast variant on a GPU) and batch size:

- baseline ``torch-fp32``: ``HoVerNetInference`` in fp32, eager, ``torch.no_grad``,
  on the same device;
- hvx: the backend ``hvx.Engine.load`` picks (``--backend auto``) or the one
  asked for: ONNX Runtime on a CPU, torch fp16 + CUDA graphs or TensorRT on a GPU.

Both get the same input: real tiles (CoNSeP) preprocessed by hvx. The two are
timed in alternation (``hvx.bench.paired``): the speed-up is the median of the
per-round ratios, with its p25-p75 in ``extra.paired_ratio``. Each record
carries the FLOPs per tile (``FlopCounterMode``, counted once per variant and
size) and, on a GPU, the achieved TFLOP/s and its fraction of the card's
measured fp16 matmul peak. Out-of-memory errors halve the batch (recorded).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from hvx import _artifacts
from hvx.bench import _inputs, _models, harness, paired
from hvx.engine import Engine

NAME = "network"
HELP = "the network on hvx's backend vs torch fp32 eager, per variant, with FLOPs and TFLOP/s"


def load_engine(ctx: harness.BenchContext, bundle: Path, cache_dir: Path):
    """``hvx.Engine.load`` with the backend of ``ctx.options["backend"]`` (default auto).

    With ``ctx.options["threads"]`` an ONNX Runtime session is re-created with that
    many intra-op threads (the Engine uses ONNX Runtime's default, all cores), so
    both sides of a CPU comparison use the same thread count.
    """
    engine = Engine.load(
        bundle,
        backend=ctx.options.get("backend") or "auto",
        device=ctx.device,
        cache_dir=cache_dir,
    )
    threads = ctx.options.get("threads")
    if threads and engine.backend == "onnxruntime":
        from hvx.backends.onnxruntime import OnnxRuntimeBackend
        from hvx.bundle import load_bundle

        path = _artifacts.onnx_for_bundle(load_bundle(bundle), cache_dir)  # cached by Engine.load
        engine.runner = OnnxRuntimeBackend(path, threads=int(threads))
    return engine


@contextlib.contextmanager
def torch_threads(ctx: harness.BenchContext):
    """Sets torch's intra-op threads to ``ctx.options["threads"]`` (if given) for a block."""
    import torch

    before = torch.get_num_threads()
    threads = ctx.options.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def flop_rate(flops: float, tiles_per_s: float, device: str) -> dict:
    """Achieved TFLOP/s; on CUDA also its fraction of the measured fp16 matmul peak."""
    peaks = harness.device_peaks(device)
    if peaks is None:
        return {"achieved_tflops": flops * tiles_per_s / 1e12}
    achieved = flops * tiles_per_s / 1e12
    return {
        "achieved_tflops": achieved,
        "matmul_peak_tflops": peaks["matmul_fp16_tflops"],
        "fraction_of_matmul_peak": achieved / peaks["matmul_fp16_tflops"],
    }


def run(ctx: harness.BenchContext) -> list[harness.Record]:
    """Measures each model and batch size; returns baseline and hvx records."""
    records: list[harness.Record] = []
    with tempfile.TemporaryDirectory(prefix="hvx-bench-") as tmp, torch_threads(ctx):
        for model in _models.bench_models(ctx, Path(tmp)):
            records += _run_model(ctx, model, Path(tmp))
    return records


def _run_model(
    ctx: harness.BenchContext, model: _models.BenchModel, tmp: Path
) -> list[harness.Record]:
    import torch

    from hvx.bundle import load_bundle
    from hvx.model import HoVerNetInference
    from hvx.preprocess import preprocess

    bundle = load_bundle(model.bundle)
    engine = load_engine(ctx, model.bundle, tmp)
    size = _models.round_up(_models.stage_size(ctx), engine.size_multiple)
    eager = HoVerNetInference(bundle.build_model(ctx.device, torch.float32)).eval()
    flops = harness.flops_per_tile(bundle.variant, size, bundle.in_chans, bundle.num_types)
    hvx_impl = f"{engine.backend}-{engine.precision}"
    cuda = ctx.device.startswith("cuda")
    threads = torch.get_num_threads()

    def pair(batch: int) -> tuple[harness.Record, harness.Record]:
        tiles, source = _inputs.real_tiles(batch, size)
        x32 = preprocess(tiles, bundle.preprocess, device=ctx.device, dtype=torch.float32)
        x_hvx = x32.to(engine.runner.input_dtype)
        extra = {
            **model.describe(),
            "inputs": source,
            "gflop_per_tile": flops / 1e9,
            "threads": threads,
        }

        def eager_call():
            with torch.no_grad():
                return eager(x32)

        # CUDA graphs are captured on the second call of a shape: warm up past it.
        base, mine = paired.measure_pair(
            NAME,
            ("torch-fp32", eager_call),
            (hvx_impl, lambda: engine.runner.run(x_hvx)),
            batch,
            size,
            ctx,
            **({hvx_impl: max(ctx.warmup, 3)} if cuda else {}),
        )
        base.extra = {
            **extra,
            "precision": "fp32",
            **flop_rate(flops, base.tiles_per_s, ctx.device),
        }
        mine.extra = {
            **extra,
            **mine.extra,
            "backend": engine.backend,
            "precision": engine.precision,
            **flop_rate(flops, mine.tiles_per_s, ctx.device),
        }
        return base, mine

    return _models.sweep_batches(ctx, bundle.variant, pair, "network")
