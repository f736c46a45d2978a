"""TensorRT FP16 plans: build settings, target, cache key, plan files and the build.

A plan is built from an hvx ONNX export (:mod:`hvx.backends.export`) with the
TensorRT 10.x Python API: one explicit optimisation profile (min/opt/max of N,
H, W), a memory pool limit instead of the removed ``max_workspace_size``, a
timing cache persisted beside the plans, every ONNX parser error logged. A plan
is stored as ``<key>.plan`` with a sidecar ``<key>.plan.json`` recording what it
was built for; :func:`load_plan` refuses a plan whose TensorRT version, GPU or
compute capability differs from this machine's, before any TensorRT call.

The cache key (STYLE §10 item 10, torch-tensorrt's engine-cache practice)
hashes everything that changes the plan, canonicalised first: the ONNX bytes
(doc strings and producer version stripped, deterministic serialisation), the
profile, the precision flags, the workspace limit, the TensorRT version and the
GPU name and compute capability.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from hvx import _dictconfig
from hvx._version import __version__
from hvx.backends.base import INPUT_NAME
from hvx.backends.export import canonical_onnx_bytes
from hvx.io.atomic import atomic_write

__all__ = [
    "PLAN_FORMAT",
    "PlanMismatchError",
    "PlanSettings",
    "PlanTarget",
    "build_tensorrt_plan",
    "check_plan_target",
    "load_plan",
    "plan_cache_key",
    "plan_path_for",
    "read_plan_meta",
    "sidecar_path",
    "timing_cache_path",
    "window_plan_settings",
    "write_plan",
]

log = logging.getLogger(__name__)

PLAN_FORMAT = "hvx-tensorrt-plan"
PLAN_FORMAT_VERSION = 1
_PRECISION_FLAGS = ("bf16", "fp16", "tf32")

# --------------------------------------------------------------------------- plan key


def _shape3(value: Any, what: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"expected {what} as (N, H, W) integers, got {value!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"expected {what} as (N, H, W) positive integers, got {value!r}")
    return shape  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class PlanSettings:
    """Everything about a TensorRT build that the user chooses (part of the cache key).

    The defaults are what ``Engine.load`` builds on demand and what ``hvx build
    --tensorrt`` builds without options (so the two find the same cached plan):
    tiles of 64..512 pixels (after padding to the model's size multiple), tuned
    for 8 tiles of 256x256; the Engine splits larger batches.

    Attributes:
        min_shape: Smallest (N, H, W) the plan accepts.
        opt_shape: (N, H, W) TensorRT tunes for.
        max_shape: Largest (N, H, W) the plan accepts.
        precision: Builder precision flags, a subset of {"fp16", "bf16", "tf32"}
            (stored sorted; the empty set means strict fp32).
        workspace_bytes: ``MemoryPoolType.WORKSPACE`` limit.

    Raises:
        ValueError: For shapes that are not min <= opt <= max, unknown flags or a
            non-positive workspace.
    """

    min_shape: tuple[int, int, int] = (1, 64, 64)
    opt_shape: tuple[int, int, int] = (8, 256, 256)
    max_shape: tuple[int, int, int] = (16, 512, 512)
    precision: tuple[str, ...] = ("fp16",)
    workspace_bytes: int = 4 << 30

    def __post_init__(self) -> None:
        lo = _shape3(self.min_shape, "min_shape")
        mid = _shape3(self.opt_shape, "opt_shape")
        hi = _shape3(self.max_shape, "max_shape")
        if not all(a <= b <= c for a, b, c in zip(lo, mid, hi, strict=True)):
            raise ValueError(f"expected min <= opt <= max per axis, got {lo}, {mid}, {hi}")
        flags = tuple(sorted({str(f).lower() for f in self.precision}))
        bad = [f for f in flags if f not in _PRECISION_FLAGS]
        if bad:
            raise ValueError(f"expected precision flags from {_PRECISION_FLAGS}, got {bad}")
        if int(self.workspace_bytes) < 1:
            raise ValueError(f"expected workspace_bytes >= 1, got {self.workspace_bytes}")
        object.__setattr__(self, "min_shape", lo)
        object.__setattr__(self, "opt_shape", mid)
        object.__setattr__(self, "max_shape", hi)
        object.__setattr__(self, "precision", flags)
        object.__setattr__(self, "workspace_bytes", int(self.workspace_bytes))

    def to_dict(self) -> dict:
        """JSON-ready, canonical form."""
        return _dictconfig.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "plan settings") -> PlanSettings:
        """Inverse of :meth:`to_dict` (:mod:`hvx._dictconfig`: every key required)."""
        return _dictconfig.from_dict(cls, d, source=source)

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """Whether an input of shape (N, C, H, W) lies inside the profile."""
        n, h, w = shape[0], shape[2], shape[3]
        return all(
            a <= v <= b for a, v, b in zip(self.min_shape, (n, h, w), self.max_shape, strict=True)
        )


def window_plan_settings(settings: PlanSettings, window: int) -> PlanSettings:
    """``settings`` with H = W = ``window`` everywhere (valid-padding networks).

    The batch sizes, precision flags and workspace are kept; the Engine cuts
    images into ``window`` x ``window`` inputs for such networks.
    """
    return dataclasses.replace(
        settings,
        min_shape=(settings.min_shape[0], window, window),
        opt_shape=(settings.opt_shape[0], window, window),
        max_shape=(settings.max_shape[0], window, window),
    )


@dataclasses.dataclass(frozen=True)
class PlanTarget:
    """What a plan is bound to: the TensorRT version and the GPU.

    Attributes:
        tensorrt_version: ``tensorrt.__version__`` (e.g. "10.7.0").
        gpu_name: ``torch.cuda.get_device_name`` (whitespace collapsed).
        compute_capability: (major, minor), e.g. (9, 0).
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensorrt_version", str(self.tensorrt_version).strip())
        object.__setattr__(self, "gpu_name", " ".join(str(self.gpu_name).split()))
        cc = tuple(int(v) for v in self.compute_capability)
        if len(cc) != 2:
            raise ValueError(
                f"expected compute_capability (major, minor), got {self.compute_capability!r}"
            )
        object.__setattr__(self, "compute_capability", cc)

    def to_dict(self) -> dict:
        """JSON-ready, canonical form."""
        return _dictconfig.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "plan target") -> PlanTarget:
        """Inverse of :meth:`to_dict` (:mod:`hvx._dictconfig`: every key required)."""
        return _dictconfig.from_dict(cls, d, source=source)

    def describe(self) -> str:
        """``'NVIDIA H100 80GB HBM3' (sm_90) with TensorRT 10.7.0``."""
        major, minor = self.compute_capability
        return f"{self.gpu_name!r} (sm_{major}{minor}) with TensorRT {self.tensorrt_version}"

    @classmethod
    def current(cls, device: str = "cuda") -> PlanTarget:
        """This machine's target for ``device``.

        Raises:
            ImportError: If TensorRT is not installed.
            RuntimeError: If no CUDA GPU is visible.
        """
        try:
            import tensorrt as trt
        except ImportError as err:
            raise ImportError(
                "TensorRT is not installed: pip install 'hvx[trt]' (NVIDIA's index), "
                "or use backend='torch' / 'onnxruntime'"
            ) from err
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("TensorRT plans need a CUDA GPU; torch.cuda.is_available() is False")
        dev = torch.device(device)
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        return cls(
            tensorrt_version=trt.__version__,
            gpu_name=torch.cuda.get_device_name(idx),
            compute_capability=torch.cuda.get_device_capability(idx),
        )


def plan_cache_key(onnx_bytes: bytes, settings: PlanSettings, target: PlanTarget) -> str:
    """The sha256 hex key of a plan: canonical ONNX bytes + settings + target.

    Args:
        onnx_bytes: The ONNX export (canonicalised here).
        settings: Profile, precision flags, workspace.
        target: TensorRT version and GPU.

    Returns:
        64 hex characters.
    """
    doc = {
        "format": PLAN_FORMAT,
        "format_version": PLAN_FORMAT_VERSION,
        "onnx_sha256": hashlib.sha256(canonical_onnx_bytes(onnx_bytes)).hexdigest(),
        "settings": settings.to_dict(),
        "target": target.to_dict(),
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


# --------------------------------------------------------------------------- plan files


class PlanMismatchError(ValueError):
    """A plan was built for another GPU, compute capability or TensorRT version."""


def sidecar_path(plan_path: str | os.PathLike) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    p = Path(plan_path)
    return p.with_name(p.name + ".json")


def write_plan(plan_path: str | os.PathLike, plan: bytes, meta: dict) -> Path:
    """Writes a plan and its sidecar atomically (sidecar last: it marks completion).

    Args:
        plan_path: Destination ``.plan`` file.
        plan: The serialized engine.
        meta: Sidecar fields; ``format``, ``format_version`` and ``plan_sha256`` are added.

    Returns:
        The plan path.
    """
    plan_path = Path(plan_path)
    doc = dict(meta)
    doc.update(
        format=PLAN_FORMAT,
        format_version=PLAN_FORMAT_VERSION,
        plan_sha256=hashlib.sha256(plan).hexdigest(),
        plan_bytes=len(plan),
    )
    atomic_write(plan_path, plan)
    atomic_write(sidecar_path(plan_path), (json.dumps(doc, indent=2) + "\n").encode())
    return plan_path


_REQUIRED_META = ("format", "format_version", "key", "plan_sha256", "settings", "target")


def read_plan_meta(plan_path: str | os.PathLike) -> dict:
    """Reads and checks a plan's sidecar JSON.

    Returns:
        The sidecar dict with ``settings`` and ``target`` parsed into
        :class:`PlanSettings` / :class:`PlanTarget`.

    Raises:
        FileNotFoundError: If the plan or its sidecar is missing.
        ValueError: If the sidecar is not an hvx plan sidecar of a known version.
    """
    plan_path = Path(plan_path)
    side = sidecar_path(plan_path)
    if not plan_path.is_file():
        raise FileNotFoundError(f"TensorRT plan not found: {plan_path}")
    if not side.is_file():
        raise FileNotFoundError(
            f"expected the sidecar {side.name} beside {plan_path} (it records which GPU and "
            "TensorRT version the plan was built for); rebuild with `hvx build BUNDLE --tensorrt`"
        )
    try:
        doc = json.loads(side.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"expected JSON in {side}, got a parse error: {err}") from err
    missing = (
        [k for k in _REQUIRED_META if k not in doc] if isinstance(doc, dict) else _REQUIRED_META
    )
    if missing:
        raise ValueError(
            f"expected sidecar fields {list(_REQUIRED_META)} in {side}, missing {missing}"
        )
    if doc["format"] != PLAN_FORMAT or doc["format_version"] != PLAN_FORMAT_VERSION:
        raise ValueError(
            f"expected {PLAN_FORMAT} version {PLAN_FORMAT_VERSION} in {side}, "
            f"got {doc['format']!r} version {doc['format_version']!r}"
        )
    doc["settings"] = PlanSettings.from_dict(doc["settings"], source=f"{side}: settings")
    doc["target"] = PlanTarget.from_dict(doc["target"], source=f"{side}: target")
    return doc


def check_plan_target(
    meta: dict, target: PlanTarget, plan_path: str | os.PathLike = "plan"
) -> None:
    """Raises :class:`PlanMismatchError` unless the plan was built for ``target``."""
    built: PlanTarget = meta["target"]
    if built == target:
        return
    what = [
        label
        for label, a, b in (
            ("TensorRT version", built.tensorrt_version, target.tensorrt_version),
            ("GPU", built.gpu_name, target.gpu_name),
            ("compute capability", built.compute_capability, target.compute_capability),
        )
        if a != b
    ]
    raise PlanMismatchError(
        f"TensorRT plan {plan_path} was built for {built.describe()}, but this machine has "
        f"{target.describe()} (different {', '.join(what)}); TensorRT plans only run where "
        "they were built: rebuild it here with `hvx build BUNDLE --tensorrt`"
    )


def load_plan(plan_path: str | os.PathLike, target: PlanTarget) -> tuple[bytes, dict]:
    """Reads a plan after checking its sidecar against ``target`` (no TensorRT call).

    Args:
        plan_path: The ``.plan`` file.
        target: This machine's :class:`PlanTarget` (``PlanTarget.current()``).

    Returns:
        ``(plan_bytes, meta)``.

    Raises:
        FileNotFoundError: Missing plan or sidecar.
        PlanMismatchError: Built for another GPU / compute capability / TensorRT version.
        ValueError: Bad sidecar, or plan bytes that do not match the recorded sha256.
    """
    meta = read_plan_meta(plan_path)
    check_plan_target(meta, target, plan_path)
    data = Path(plan_path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta["plan_sha256"]:
        raise ValueError(
            f"expected plan bytes with sha256 {meta['plan_sha256'][:16]}... (from the sidecar), "
            f"got {digest[:16]}... in {plan_path}: the file is truncated or replaced; rebuild it"
        )
    return data, meta


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def timing_cache_path(cache_dir: str | os.PathLike, target: PlanTarget) -> Path:
    """Where the timing cache of ``target`` lives in ``cache_dir`` (one per GPU/version)."""
    major, minor = target.compute_capability
    trt_v, gpu = _slug(target.tensorrt_version), _slug(target.gpu_name)
    name = f"timing-trt{trt_v}-{gpu}-sm{major}{minor}.cache"
    return Path(cache_dir) / name


def plan_path_for(cache_dir: str | os.PathLike, key: str) -> Path:
    """``<cache_dir>/<key[:32]>.plan``."""
    return Path(cache_dir) / f"{key[:32]}.plan"


# --------------------------------------------------------------------------- TensorRT build


def build_tensorrt_plan(
    onnx_path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    settings: PlanSettings = PlanSettings(),
    *,
    model_meta: dict | None = None,
    device: str = "cuda",
    force: bool = False,
) -> Path:
    """Builds (or finds in the cache) a TensorRT plan for an hvx ONNX export.

    Written against the TensorRT 10 Python API; never executed on the machines
    where it was written (no TensorRT there), see the ``tensorrt`` tests.

    Args:
        onnx_path: The export of :func:`export_onnx`.
        cache_dir: Folder of plans and timing caches.
        settings: Profile, precision flags, workspace limit.
        model_meta: Model facts recorded in the sidecar (the bundle's model.json),
            so that a plan can be loaded without its bundle.
        device: The CUDA device to build for.
        force: Rebuild even when the cache holds the plan.

    Returns:
        The plan path (``<cache_dir>/<key[:32]>.plan``, sidecar beside it).

    Raises:
        ImportError: Without TensorRT.
        RuntimeError: If parsing (every parser error is logged and listed) or the build fails.
    """
    target = PlanTarget.current(device)
    import tensorrt as trt

    onnx_bytes = Path(onnx_path).read_bytes()
    key = plan_cache_key(onnx_bytes, settings, target)
    plan_path = plan_path_for(cache_dir, key)
    if not force and plan_path.is_file() and sidecar_path(plan_path).is_file():
        try:
            load_plan(plan_path, target)
            log.info("TensorRT plan cache hit: %s", plan_path)
            return plan_path
        except (ValueError, OSError) as err:
            log.warning("cached plan %s unusable (%s); rebuilding", plan_path, err)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # _parser and _timing_cache stay referenced here: the network uses weights the parser
    # owns, the config the timing cache (both must outlive the build)
    network, _parser = _parse_onnx(trt, builder, logger, onnx_bytes, onnx_path)
    in_chans = int(network.get_input(0).shape[1])
    tc_path = timing_cache_path(cache_dir, target)
    config, _timing_cache = _builder_config(trt, builder, settings, in_chans, tc_path)

    log.info("building TensorRT plan for %s (%s); this takes minutes", target.describe(), settings)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build a plan from {onnx_path}; see the log above")
    atomic_write(tc_path, bytes(config.get_timing_cache().serialize()))

    meta = {
        "key": key,
        "onnx_sha256": hashlib.sha256(canonical_onnx_bytes(onnx_bytes)).hexdigest(),
        "settings": settings.to_dict(),
        "target": target.to_dict(),
        "in_chans": in_chans,
        "model": model_meta or {},
        "hvx": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    return write_plan(plan_path, bytes(serialized), meta)


def _parse_onnx(trt, builder, logger, onnx_bytes: bytes, onnx_path) -> tuple[Any, Any]:
    """``(network, parser)`` of the ONNX bytes; every parser error is logged and raised.

    Raises:
        RuntimeError: If TensorRT cannot parse the export.
    """
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        for e in errors:
            log.error("TensorRT ONNX parser: %s", e)
        raise RuntimeError(
            f"TensorRT could not parse {onnx_path} ({len(errors)} errors): " + "; ".join(errors)
        )
    return network, parser


def _builder_config(
    trt, builder, settings: PlanSettings, in_chans: int, tc_path: Path
) -> tuple[Any, Any]:
    """``(builder config, timing cache)``: workspace, precision flags, profile, timing cache.

    The timing cache object is returned so that it outlives the build.
    """
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    flags = {
        "fp16": trt.BuilderFlag.FP16,
        "bf16": trt.BuilderFlag.BF16,
        "tf32": trt.BuilderFlag.TF32,
    }
    for name, flag in flags.items():
        if name in settings.precision:
            config.set_flag(flag)
        else:
            config.clear_flag(flag)  # TF32 is on by default: the key says what was used
    profile = builder.create_optimization_profile()
    (n0, h0, w0), (n1, h1, w1), (n2, h2, w2) = (
        settings.min_shape,
        settings.opt_shape,
        settings.max_shape,
    )
    profile.set_shape(
        INPUT_NAME, (n0, in_chans, h0, w0), (n1, in_chans, h1, w1), (n2, in_chans, h2, w2)
    )
    config.add_optimization_profile(profile)

    timing_cache = config.create_timing_cache(tc_path.read_bytes() if tc_path.is_file() else b"")
    config.set_timing_cache(timing_cache, False)
    return config, timing_cache
