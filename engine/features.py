"""What this machine is and can run: probed once, printed by ``hvx info``.

Every optional capability (CUDA, Triton and whether it runs interpreted,
TensorRT, ONNX Runtime, numba, the native extension) is probed here and only
here, so that backends, tests and the CLI agree on what is available and each
missing piece can say how to get it. :func:`machine_summary` is the one
description of the host (CPU, GPU, Python, platform) that ``hvx info`` prints and
every results file records (through :mod:`hvx.provenance`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import os
import platform

__all__ = ["Features", "Probe", "features", "machine_summary", "require_native"]

_NATIVE_HINT = (
    "the native extension hvx._native is not built; reinstall hvx with "
    "`pip install -e .` (or `python setup.py build_ext --inplace`) with a C++17 compiler"
)


@dataclasses.dataclass(frozen=True)
class Probe:
    """The outcome of probing one capability.

    Attributes:
        available: True when the capability can be used.
        version: Version string of the package, or "" when absent.
        detail: Why it is unavailable, or extra facts (device names, modes).
    """

    available: bool
    version: str = ""
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Features:
    """Capabilities of this process, see :func:`features`.

    Attributes:
        torch: torch itself (required).
        cuda: a CUDA GPU visible to torch; detail lists the devices.
        triton: Triton importable; detail says "interpreted" when
            ``TRITON_INTERPRET=1`` (kernels run on the CPU) or "gpu".
        tensorrt: the TensorRT Python API (needs a CUDA GPU to be useful).
        onnxruntime: ONNX Runtime; detail lists its execution providers.
        numba: numba (CPU preprocessing).
        native: hvx._native; detail gives OpenMP and thread count.
        timm: timm (model encoders).
    """

    torch: Probe
    cuda: Probe
    triton: Probe
    tensorrt: Probe
    onnxruntime: Probe
    numba: Probe
    native: Probe
    timm: Probe

    def rows(self) -> list[tuple[str, Probe]]:
        """Returns ``(name, probe)`` pairs in display order."""
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


def _import(name: str) -> tuple[object | None, str]:
    """Imports ``name``; returns (module, "") or (None, reason)."""
    if importlib.util.find_spec(name) is None:
        return None, "not installed"
    try:
        return importlib.import_module(name), ""
    except Exception as err:  # a broken install must not break hvx info
        return None, f"import failed: {type(err).__name__}: {err}"


def _probe_module(name: str) -> Probe:
    mod, why = _import(name)
    if mod is None:
        return Probe(False, detail=why)
    return Probe(True, version=str(getattr(mod, "__version__", "")))


def _probe_cuda() -> Probe:
    torch, why = _import("torch")
    if torch is None:
        return Probe(False, detail=why)
    if not torch.cuda.is_available():
        return Probe(False, detail="no CUDA device visible to torch")
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return Probe(True, version=str(torch.version.cuda), detail=", ".join(names))


def _probe_triton(cuda: Probe) -> Probe:
    mod, why = _import("triton")
    if mod is None:
        return Probe(False, detail=why)
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if interpreted:
        mode = "interpreted (TRITON_INTERPRET=1, runs on the CPU)"
    elif cuda.available:
        mode = "gpu"
    else:
        return Probe(False, mod.__version__, "no GPU; set TRITON_INTERPRET=1 to run on the CPU")
    return Probe(True, version=mod.__version__, detail=mode)


def _probe_tensorrt(cuda: Probe) -> Probe:
    mod, why = _import("tensorrt")
    if mod is None:
        return Probe(False, detail=why)
    if not cuda.available:
        return Probe(False, mod.__version__, "installed but no CUDA GPU")
    return Probe(True, version=mod.__version__)


def _probe_onnxruntime() -> Probe:
    mod, why = _import("onnxruntime")
    if mod is None:
        return Probe(False, detail=why)
    return Probe(True, mod.__version__, ", ".join(mod.get_available_providers()))


def _probe_native() -> Probe:
    mod, why = _import("hvx._native")
    if mod is None:
        return Probe(False, detail=f"{why}; {_NATIVE_HINT}")
    omp = "OpenMP" if mod.openmp_enabled() else "no OpenMP"
    return Probe(True, detail=f"{omp}, {mod.max_threads()} threads")


_PROBES = {
    "torch": lambda: _probe_module("torch"),
    "cuda": _probe_cuda,
    "triton": lambda: _probe_triton(probe("cuda")),
    "tensorrt": lambda: _probe_tensorrt(probe("cuda")),
    "onnxruntime": _probe_onnxruntime,
    "numba": lambda: _probe_module("numba"),
    "native": _probe_native,
    "timm": lambda: _probe_module("timm"),
}


@functools.cache
def probe(name: str) -> Probe:
    """Probes one capability (a field of :class:`Features`) once per process.

    Importing what is probed costs time (timm: seconds); code that needs one
    answer, e.g. the Engine choosing a CPU backend, asks for that one alone.

    Raises:
        ValueError: ``name`` is not a field of :class:`Features`.
    """
    if name not in _PROBES:
        raise ValueError(f"expected a capability in {list(_PROBES)}, got {name!r}")
    return _PROBES[name]()


@functools.cache
def features() -> Features:
    """Probes every optional capability once per process.

    Returns:
        The cached :class:`Features` of this process.
    """
    return Features(**{f.name: probe(f.name) for f in dataclasses.fields(Features)})


def require_native():
    """Returns the hvx._native module or raises ImportError saying how to build it."""
    try:
        from hvx import _native
    except ImportError as err:
        raise ImportError(_NATIVE_HINT) from err
    return _native


def _cpu_model() -> str | None:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine_summary() -> dict:
    """The one description of this machine, for ``hvx info`` and every results file.

    :func:`hvx.provenance.provenance` embeds it unchanged, so ``hvx info``,
    ``hvx-bench``, ``hvx-train`` and the benchmark scripts name a machine alike.

    Returns:
        ``{"python", "platform", "cpu", "cpu_count", "cpu_model", "gpu"}``: versions
        and names as strings, ``cpu_count`` an int (None when unknown),
        ``cpu_model`` None off Linux, ``gpu`` the CUDA devices or None.
    """
    cuda = probe("cuda")
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "gpu": cuda.detail if cuda.available else None,
    }
