"""Which runner ``Engine.load`` builds for a bundle folder or a TensorRT plan.

Each function returns ``(runner, meta)``: the backend object
(``hvx.backends.Backend``) and the model facts an Engine needs besides the
network (``hvx._artifacts.model_meta``: class names and colours, mpp,
pre/post-processing, size multiple, valid window).
"""

from __future__ import annotations

import logging
from pathlib import Path

from hvx import _artifacts
from hvx.backends import quantize
from hvx.backends.onnxruntime import OnnxRuntimeBackend
from hvx.backends.plan import PlanSettings, read_plan_meta
from hvx.backends.tensorrt import TensorRTBackend
from hvx.features import features, probe

__all__ = ["CPU_BACKEND_PREFERENCE", "bundle_runner", "plan_runner", "resolve_device"]

log = logging.getLogger("hvx.engine")

#: Order tried for backend="auto" on a CPU (fp32). Measured paired in
#: benchmarks/results/cpu-precision-2026-12-05.json (see BENCHMARKS): fp32 ONNX
#: Runtime 1.4-1.6x torch eager fp32 at one thread on the default model.
CPU_BACKEND_PREFERENCE = ("onnxruntime", "torch")


def resolve_device(device: str) -> str:
    """``"cpu"`` or ``"cuda:K"`` for ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:K"``.

    Raises:
        ValueError: For another device, or CUDA without a visible GPU.
    """
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"expected device 'auto', 'cpu' or 'cuda[:K]', got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"expected device 'auto', 'cpu' or 'cuda[:K]', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"expected a visible CUDA GPU for device={device!r}, found none")
    return "cpu" if dev.type == "cpu" else f"cuda:{dev.index or 0}"


def plan_runner(path: Path, backend: str, dev: str):
    """The TensorRT runner of a ``.plan`` file and the model facts of its sidecar.

    Raises:
        ValueError: Not a plan, a backend other than auto/tensorrt, a CPU device, or
            a sidecar without model facts.
    """
    if path.suffix != ".plan" and not Path(f"{path}.json").is_file():
        raise ValueError(
            "expected a model bundle folder (model.json + weights.safetensors) or a "
            f"TensorRT .plan file, got the file {path}"
        )
    if backend not in ("auto", "tensorrt"):
        raise ValueError(f"expected backend 'auto' or 'tensorrt' for a plan file, got {backend!r}")
    if not dev.startswith("cuda"):
        raise ValueError(f"expected a CUDA device for a TensorRT plan, got {dev!r}")

    meta = read_plan_meta(path)
    if not meta.get("model"):
        raise ValueError(f"expected model facts in the sidecar of {path}; rebuild with hvx build")
    return TensorRTBackend(path, device=dev), meta["model"]


def _check_combination(backend: str, dev: str, precision: str) -> None:
    cuda = dev.startswith("cuda")
    if precision == "fp16" and not cuda:
        raise ValueError(f"expected precision 'fp32' on the CPU, got {precision!r}")
    if backend == "tensorrt" and not cuda:
        raise ValueError(f"expected a CUDA device for backend='tensorrt', got {dev!r}")
    if precision == "int8" and cuda:
        raise ValueError(f"expected device 'cpu' for precision='int8', got {dev!r}")


def bundle_runner(path, backend: str, dev: str, precision: str, cache_dir, plan_settings):
    """The runner ``Engine.load`` picks for a bundle folder (see its docstring).

    Returns:
        ``(runner, meta)``.
    """
    from hvx.bundle import load_bundle
    from hvx.precision import auto_cuda_precision

    bundle = load_bundle(path)
    _check_combination(backend, dev, precision)
    cuda = dev.startswith("cuda")
    if precision == "bf16" and cuda and backend == "auto":
        backend = "torch"  # TensorRT plans here are fp16/TF32
    runner = None
    model = None
    if not cuda and precision in ("auto", "int8", "bf16"):
        runner = _cpu_lowp_runner(bundle, path, backend, precision)
    if cuda and precision == "auto" and backend != "onnxruntime":
        model = bundle.build_model("cpu")  # read once: the check, then the torch runner
        precision = auto_cuda_precision(bundle, dev, path, model)
    if backend == "tensorrt" or (backend == "auto" and cuda and features().tensorrt.available):
        runner = _tensorrt_runner(bundle, path, backend, dev, precision, cache_dir, plan_settings)
    if runner is None and (backend == "torch" or (backend == "auto" and cuda)):
        runner = _torch_runner(bundle, dev, precision, model)
    # The ONNX paths build no model: an export cache hit needs none (no timm import, #24)
    if runner is None and backend == "onnxruntime":
        runner = _ort_runner(bundle, cache_dir, model)
    if runner is None:  # auto on the CPU
        for name in CPU_BACKEND_PREFERENCE:
            if name == "onnxruntime" and probe("onnxruntime").available:
                runner = _ort_runner(bundle, cache_dir, model)
                break
            if name == "torch":
                runner = _torch_runner(bundle, dev, precision)
                break
    if runner.name == "torch":
        size_multiple = runner.module.model.size_multiple
    elif runner.name == "tensorrt":
        size_multiple = runner.meta["model"]["size_multiple"]
    else:  # onnxruntime: the variant's, as the model would have it
        from hvx.model import get_variant

        size_multiple = get_variant(bundle.variant).size_multiple
    return runner, _artifacts.model_meta(bundle, size_multiple)


def _tensorrt_runner(bundle, path, backend, dev, precision, cache_dir, plan_settings):
    """A TensorRT runner (built or cached plan); None when "auto" cannot get one."""
    try:
        settings = plan_settings or (
            PlanSettings(precision=("tf32",)) if precision == "fp32" else PlanSettings()
        )
        plan = _artifacts.plan_for_bundle(bundle, settings, cache_dir, device=dev)
        return TensorRTBackend(plan, device=dev)
    except Exception as err:
        if backend == "tensorrt":
            raise
        log.warning("TensorRT unavailable for %s (%s); using torch", path, err)
        return None


def _cpu_lowp_runner(bundle, path, backend: str, precision: str):
    """The int8/bf16 CPU runner asked for, or picked by "auto" (gate passed), or None.

    See :mod:`hvx.backends.quantize` (the gate and the bundle's ``precision.json``).
    """
    explicit = precision != "auto"
    if not explicit:
        precision = quantize.auto_cpu_precision(path)
        if precision == "fp32":
            return None
    want = {"int8": "onnxruntime", "bf16": "torch"}[precision]
    if backend not in ("auto", want):
        if not explicit:
            return None
        raise ValueError(
            f"expected backend 'auto' or {want!r} for precision={precision!r}, got {backend!r}"
        )
    try:
        runner = quantize.cpu_runner(bundle, precision)
    except ImportError as err:
        if explicit:
            raise
        log.warning("%s passed its gate but cannot run here (%s); using fp32", precision, err)
        return None
    if not explicit:
        log.info("%s passed the accuracy gate (%s): using it", precision, path)
    return runner


def _torch_runner(bundle, dev: str, precision: str, model=None):
    from hvx.backends.torch import TorchBackend

    prec = None if precision == "auto" else precision
    model = bundle.build_model("cpu") if model is None else model
    return TorchBackend.from_model(model, device=dev, precision=prec)


def _ort_runner(bundle, cache_dir, model):

    path = _artifacts.onnx_for_bundle(bundle, cache_dir, model=model)
    try:
        return OnnxRuntimeBackend(path)
    except Exception as err:  # a truncated/corrupt cached export: export it again, once
        log.warning("cached ONNX export %s is unreadable (%s); exporting it again", path, err)
        path.unlink(missing_ok=True)
        return OnnxRuntimeBackend(_artifacts.onnx_for_bundle(bundle, cache_dir, model=model))
