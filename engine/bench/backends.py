"""Bench stage ``backends``: the network on each backend, per variant and batch size.

Baseline: torch eager fp32 on the same device (DESIGN §6). Measured: ONNX
Runtime (CPU), torch fp16 + CUDA graphs and TensorRT FP16 (GPU, when present).
Inputs are random [0, 1) float tensors of the network's input shape: the
network's cost does not depend on pixel values, and preprocessing and
post-processing have their own stages. Weights are random at a fixed seed.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from hvx.bench import harness
from hvx.bench.network import flop_rate
from hvx.features import features

NAME = "backends"
HELP = "network throughput per backend (torch fp32 baseline, ONNX Runtime, torch fp16, TensorRT)"

log = logging.getLogger(__name__)

#: Variants measured by default: the ones a CPU can run in a short benchmark.
DEFAULT_VARIANTS = ("fast_convnext_atto", "fast_convnext_pico", "convnext_atto")


def _runners(variant: str, ctx: harness.BenchContext, tmp: Path):
    """Yields (impl, backend) for the device; torch fp32 first (the baseline)."""
    import torch

    from hvx.backends.torch import TorchBackend
    from hvx.model import HoVerNetInference, create_model

    torch.manual_seed(0)
    model = create_model(variant, in_chans=6, num_types=5).eval()
    inference = HoVerNetInference(model)
    if ctx.device == "cpu":
        yield "torch-fp32", TorchBackend(inference, device="cpu")
        from hvx.backends.export import export_onnx
        from hvx.backends.onnxruntime import OnnxRuntimeBackend

        path = export_onnx(inference, tmp / f"{variant}.onnx", in_chans=6, example_size=64)
        yield "onnxruntime", OnnxRuntimeBackend(path)
        return
    yield "torch-fp32", TorchBackend(inference, device=ctx.device, precision="fp32")
    yield "torch-fp16", TorchBackend(inference, device=ctx.device, precision="fp16")
    if features().tensorrt.available:
        from hvx.backends.export import export_onnx
        from hvx.backends.plan import PlanSettings, build_tensorrt_plan
        from hvx.backends.tensorrt import TensorRTBackend

        onnx_path = export_onnx(inference, tmp / f"{variant}.onnx", in_chans=6)
        b = max(ctx.batches)
        s = ctx.size
        settings = PlanSettings((1, s, s), (b, s, s), (b, s, s))
        yield "tensorrt-fp16", TensorRTBackend(build_tensorrt_plan(onnx_path, tmp, settings))


def run(ctx: harness.BenchContext) -> list[harness.Record]:
    """Measures every backend of this device on each variant and batch size."""
    import torch

    variants = ctx.options.get("variants") or DEFAULT_VARIANTS
    sync = torch.cuda.synchronize if ctx.device.startswith("cuda") else None
    records: list[harness.Record] = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            # Stride-1 variants cost ~100x more: on a CPU they get batch 1 only.
            batches = ctx.batches
            if ctx.device == "cpu" and not variant.startswith(("fast_", "hovernet")):
                batches = [1]
            base: dict[int, float] = {}
            for impl, backend in _runners(variant, ctx, Path(tmp)):
                for n in batches:
                    x = torch.rand(n, 6, ctx.size, ctx.size, device=backend.device)
                    x = x.to(backend.input_dtype)

                    def call(backend=backend, x=x):
                        return backend.run(x).np_prob.sum() if sync else backend.run(x)

                    # Per-record peak host/device memory (harness.measure).
                    rec = harness.measure(
                        NAME, impl, n, ctx.size, call, ctx, warmup=ctx.warmup + (1 if sync else 0)
                    )
                    t = rec.timing
                    flops = harness.flops_per_tile(variant, ctx.size)
                    rec.extra = {
                        "variant": variant,
                        "device": ctx.device,
                        "precision": backend.precision,
                        "gflop_per_tile": flops / 1e9,
                        **flop_rate(flops, rec.tiles_per_s, ctx.device),
                    }
                    if impl == "torch-fp32":
                        base[n] = t.median_ms
                    else:
                        rec.baseline = "torch-fp32"
                        rec.speedup = base[n] / t.median_ms
                    log.info("%s %s b=%d: %.1f tiles/s", variant, impl, n, rec.tiles_per_s)
                    records.append(rec)
    return records
