"""``hvx.Engine``: load a model bundle or TensorRT plan, pick a backend, ``infer``.

Pipeline per call (DESIGN §1)::

    uint8 RGB (N,H,W,3) ─ hvx.preprocess ─ pad to size_multiple ─ backend.run
        ─ crop back ─ hvx.postprocess ─ BatchResult

The network's outputs stay on the backend's device until post-processing reads
them. ``infer`` is thread-safe: the backend call is serialised by a lock (CUDA
graphs and TensorRT contexts are not re-entrant), while preprocessing and
post-processing of other calls run concurrently.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from hvx.backends.base import BACKEND_NAMES, HeadOutputs

__all__ = ["CPU_BACKEND_PREFERENCE", "Engine", "load"]

log = logging.getLogger("hvx.engine")

#: Order tried for backend="auto" on a CPU (fp32). Measured paired in
#: benchmarks/results/cpu-precision-2026-12-05.json (see BENCHMARKS): fp32 ONNX
#: Runtime 1.4-1.6x torch eager fp32 at one thread on the default model.
CPU_BACKEND_PREFERENCE = ("onnxruntime", "torch")


def _as_batch(batch: Any):
    """Validates the input; returns (array or tensor (N,H,W,3) uint8, was_single)."""
    import torch

    if isinstance(batch, torch.Tensor):
        shape, dtype, ok_dtype = tuple(batch.shape), str(batch.dtype), batch.dtype == torch.uint8
    elif isinstance(batch, np.ndarray):
        shape, dtype, ok_dtype = batch.shape, str(batch.dtype), batch.dtype == np.uint8
    else:
        raise TypeError(
            "expected a numpy array or torch tensor of uint8 RGB images, "
            f"got {type(batch).__name__}"
        )
    single = len(shape) == 3
    if not ok_dtype or len(shape) not in (3, 4) or shape[-1] != 3 or 0 in shape:
        raise ValueError(
            "expected uint8 RGB images shaped (N, H, W, 3) or (H, W, 3) with N, H, W > 0, "
            f"got {dtype} {shape}"
        )
    return (batch[None] if single else batch), single


class Engine:
    """A loaded model ready to segment and classify nuclei.

    Build one with :meth:`Engine.load`. Attributes are read-only facts:

    Attributes:
        backend: Name of the runtime in use ("tensorrt", "torch" or "onnxruntime").
        device: Where the network runs ("cpu", "cuda:0", ...).
        precision: "fp32", "fp16", "bf16" or "int8".
        class_names: Names of type ids 1..num_types-1.
        class_colors: RGB per class name.
        num_types: Types including background.
        size_multiple: Inputs are padded to multiples of this internally.
        valid_window: ``(window, output)`` of a valid-padding network (the
            published HoVer-Net: (256, 164) fast, (270, 80) original), run in the
            official tile mode (:mod:`hvx.model.hovernet_tiles`); None otherwise.
        mpp: Microns per pixel the model was trained at.
        input_mpp: Microns per pixel of the images given to :meth:`infer`, or
            None when they are at the model's resolution. When it differs,
            images are resized to the model's resolution and the results back.
        source: The bundle folder or plan file loaded.
        runner: The backend object (``hvx.backends.Backend``).
    """

    def __init__(
        self,
        runner,
        *,
        preprocess_config,
        postprocess_config,
        class_names,
        class_colors,
        num_types: int,
        size_multiple: int,
        mpp: float,
        source: str,
        valid_window: tuple[int, int] | None = None,
    ) -> None:
        self.runner = runner
        self.preprocess_config = preprocess_config
        self.postprocess_config = postprocess_config
        self.class_names = tuple(class_names)
        self.class_colors = tuple(tuple(int(v) for v in c) for c in class_colors)
        self.num_types = int(num_types)
        self.size_multiple = int(size_multiple)
        self.mpp = float(mpp)
        self.source = str(source)
        self.input_mpp: float | None = None
        self.valid_window = None if valid_window is None else tuple(int(v) for v in valid_window)
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        """Name of the backend in use."""
        return self.runner.name

    @property
    def device(self) -> str:
        """Device the network runs on."""
        return self.runner.device

    @property
    def precision(self) -> str:
        """Arithmetic precision of the network."""
        return self.runner.precision

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        path: str | os.PathLike | None = None,
        backend: str = "auto",
        device: str = "auto",
        precision: str = "auto",
        *,
        mpp: float | None = None,
        cache_dir: str | os.PathLike | None = None,
        plan_settings=None,
    ) -> Engine:
        """Loads a model bundle folder or a TensorRT plan and picks a backend.

        ``backend="auto"``: TensorRT when it imports with a CUDA GPU and a plan for
        this GPU/version exists or can be built; else torch on CUDA (fp16,
        channels_last, CUDA graphs); else on the CPU the first available of
        :data:`CPU_BACKEND_PREFERENCE` (the faster here, per the benchmark).
        The choice is logged once.

        Args:
            path: Bundle folder, ``.plan`` file (with its ``.plan.json`` sidecar),
                a published model's name (``hvx.registry``, e.g.
                ``"hovernet-pannuke"``: downloaded into the cache on first use),
                or None for the bundled default model (``hvx.assets``).
            backend: "auto", "tensorrt", "torch" or "onnxruntime".
            device: "auto", "cpu", "cuda" or "cuda:K".
            precision: "auto" (on the CPU: bf16 or int8 when the bundle's
                ``precision.json`` records that it passed the accuracy gate, see
                :mod:`hvx.backends.quantize`, else fp32; on CUDA fp16 when
                :func:`hvx.precision.check_fp16`, run on the device at load,
                finds that it keeps the model's instance maps, else fp32 / TF32),
                "fp32", "fp16", "int8" (CPU, ONNX Runtime, needs ``hvx build
                --int8``) or "bf16" (torch; on the CPU needs native bf16).
            mpp: Microns per pixel of the images you will pass to :meth:`infer`
                (e.g. 0.5 for 20x); None means "at the model's resolution". When it
                differs from the model's, :meth:`infer` rescales in and out.
            cache_dir: Where ONNX exports and plans are cached (default
                ``$HVX_CACHE_DIR`` or ``~/.cache/hvx``).
            plan_settings: ``PlanSettings`` for a TensorRT plan built on demand.

        Returns:
            The :class:`Engine`.

        Raises:
            FileNotFoundError: No path and no default model, or a missing path.
            ValueError: Unknown backend/device/precision, a bad bundle, a plan for
                another GPU or TensorRT version (``PlanMismatchError``), or a
                combination that cannot run (fp16 on the CPU, TensorRT on the CPU).
            ImportError: The requested backend's runtime is not installed.
        """
        if backend != "auto" and backend not in BACKEND_NAMES:
            raise ValueError(f"expected backend 'auto' or one of {BACKEND_NAMES}, got {backend!r}")
        if precision not in ("auto", "fp32", "fp16", "int8", "bf16"):
            raise ValueError(
                f"expected precision 'auto', 'fp32', 'fp16', 'int8' or 'bf16', got {precision!r}"
            )
        if mpp is not None and not (isinstance(mpp, int | float) and 0 < mpp < 100):
            raise ValueError(f"expected mpp a positive number of microns per pixel, got {mpp!r}")
        dev = _resolve_device(device)
        if path is None:
            from hvx.assets import default_model_path

            path = default_model_path()
        from hvx import registry

        if registry.is_registered(path) and not Path(path).exists():
            path = registry.fetch(path, cache_dir)  # downloaded and converted once
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"expected a model bundle folder or a .plan file, got {path}")
        if path.is_file():
            engine = cls._load_plan(path, backend, dev)
        else:
            engine = cls._load_bundle(path, backend, dev, precision, cache_dir, plan_settings)
        engine.input_mpp = None if mpp is None else float(mpp)
        return engine

    @classmethod
    def _from_meta(cls, runner, meta: dict, source: str) -> Engine:
        from hvx.postprocess import PostprocessConfig
        from hvx.preprocess import PreprocessConfig

        engine = cls(
            runner,
            preprocess_config=PreprocessConfig.from_dict(meta["preprocess"]),
            postprocess_config=PostprocessConfig.from_dict(meta["postprocess"]),
            class_names=meta["class_names"],
            class_colors=meta["class_colors"],
            num_types=meta["num_types"],
            size_multiple=meta["size_multiple"],
            mpp=meta["mpp"],
            source=source,
            valid_window=meta.get("valid_window"),
        )
        log.info("backend: %s on %s, %s (%s)", runner.name, runner.device, runner.precision, source)
        return engine

    @classmethod
    def _load_plan(cls, path: Path, backend: str, dev: str) -> Engine:
        if path.suffix != ".plan" and not Path(f"{path}.json").is_file():
            raise ValueError(
                "expected a model bundle folder (model.json + weights.safetensors) or a "
                f"TensorRT .plan file, got the file {path}"
            )
        if backend not in ("auto", "tensorrt"):
            raise ValueError(
                f"expected backend 'auto' or 'tensorrt' for a plan file, got {backend!r}"
            )
        if not dev.startswith("cuda"):
            raise ValueError(f"expected a CUDA device for a TensorRT plan, got {dev!r}")
        from hvx.backends.plan import read_plan_meta
        from hvx.backends.tensorrt import TensorRTBackend

        meta = read_plan_meta(path)
        if not meta.get("model"):
            raise ValueError(
                f"expected model facts in the sidecar of {path}; rebuild with hvx build"
            )
        return cls._from_meta(TensorRTBackend(path, device=dev), meta["model"], str(path))

    @classmethod
    def _load_bundle(cls, path, backend, dev, precision, cache_dir, plan_settings) -> Engine:
        from hvx import _artifacts
        from hvx.bundle import load_bundle
        from hvx.features import features

        bundle = load_bundle(path)
        cuda = dev.startswith("cuda")
        if precision == "fp16" and not cuda:
            raise ValueError(f"expected precision 'fp32' on the CPU, got {precision!r}")
        if backend == "tensorrt" and not cuda:
            raise ValueError(f"expected a CUDA device for backend='tensorrt', got {dev!r}")
        if precision == "int8" and cuda:
            raise ValueError(f"expected device 'cpu' for precision='int8', got {dev!r}")
        if precision == "bf16" and cuda and backend == "auto":
            backend = "torch"  # TensorRT plans here are fp16/TF32
        runner = None
        model = None
        if not cuda and precision in ("auto", "int8", "bf16"):
            runner = cls._cpu_lowp_runner(bundle, path, backend, precision)
            if runner is not None and runner.name == "onnxruntime":
                model = bundle.build_model("cpu")  # for its size_multiple
        if cuda and precision == "auto" and backend != "onnxruntime":
            model = bundle.build_model("cpu")  # read once: the check, then the torch runner
            precision = _auto_cuda_precision(bundle, dev, path, model)
        if backend == "tensorrt" or (backend == "auto" and cuda and features().tensorrt.available):
            from hvx.backends.plan import PlanSettings
            from hvx.backends.tensorrt import TensorRTBackend

            try:
                settings = plan_settings or (
                    PlanSettings(precision=("tf32",)) if precision == "fp32" else PlanSettings()
                )
                plan = _artifacts.plan_for_bundle(bundle, settings, cache_dir, device=dev)
                runner = TensorRTBackend(plan, device=dev)
            except Exception as err:
                if backend == "tensorrt":
                    raise
                log.warning("TensorRT unavailable for %s (%s); using torch", path, err)
        if runner is None and (backend == "torch" or (backend == "auto" and cuda)):
            runner = cls._torch_runner(bundle, dev, precision, model)
        if runner is None and backend == "onnxruntime":
            model = bundle.build_model("cpu")
            runner = cls._ort_runner(bundle, cache_dir, model)
        if runner is None:  # auto on the CPU
            for name in CPU_BACKEND_PREFERENCE:
                if name == "onnxruntime" and features().onnxruntime.available:
                    model = bundle.build_model("cpu")
                    runner = cls._ort_runner(bundle, cache_dir, model)
                    break
                if name == "torch":
                    runner = cls._torch_runner(bundle, dev, precision)
                    break
        if runner.name == "torch":
            size_multiple = runner.module.model.size_multiple
        elif runner.name == "tensorrt":
            size_multiple = runner.meta["model"]["size_multiple"]
        else:
            size_multiple = model.size_multiple
        return cls._from_meta(runner, _artifacts.model_meta(bundle, size_multiple), str(path))

    @staticmethod
    def _cpu_lowp_runner(bundle, path, backend: str, precision: str):
        """The int8/bf16 CPU runner asked for, or picked by "auto" (gate passed), or None.

        See :mod:`hvx.backends.quantize` (the gate and the bundle's ``precision.json``).
        """
        from hvx.backends import quantize

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

    @staticmethod
    def _torch_runner(bundle, dev: str, precision: str, model=None):
        from hvx.backends.torch import TorchBackend

        prec = None if precision == "auto" else precision
        model = bundle.build_model("cpu") if model is None else model
        return TorchBackend.from_model(model, device=dev, precision=prec)

    @staticmethod
    def _ort_runner(bundle, cache_dir, model):
        from hvx import _artifacts
        from hvx.backends.onnxruntime import OnnxRuntimeBackend

        path = _artifacts.onnx_for_bundle(bundle, cache_dir, model=model)
        try:
            return OnnxRuntimeBackend(path)
        except Exception as err:  # a truncated/corrupt cached export: export it again, once
            log.warning("cached ONNX export %s is unreadable (%s); exporting it again", path, err)
            path.unlink(missing_ok=True)
            return OnnxRuntimeBackend(_artifacts.onnx_for_bundle(bundle, cache_dir, model=model))

    # ------------------------------------------------------------------ inference

    def heads(self, batch) -> tuple[HeadOutputs, bool]:
        """Runs preprocessing and the network; returns cropped HeadOutputs on the device.

        Args:
            batch: uint8 RGB ``(N, H, W, 3)`` or ``(H, W, 3)``, numpy or torch.

        Returns:
            ``(heads, was_single_image)``; heads have the input's H and W.

        Raises:
            TypeError / ValueError: For anything but non-empty uint8 RGB images.
        """
        import torch
        from torch.nn import functional

        from hvx.preprocess import preprocess

        images, single = _as_batch(batch)
        x = preprocess(
            images,
            self.preprocess_config,
            device=self.runner.device,
            dtype=self.runner.input_dtype,
        )
        if self.valid_window is not None:
            return self._valid_heads(x), single
        h, w = int(x.shape[2]), int(x.shape[3])
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = functional.pad(x, (0, pw, 0, ph), mode=mode)
        max_batch = self.runner.max_batch
        chunks = [x] if not max_batch else list(torch.split(x, max_batch))
        outs = []
        for chunk in chunks:
            with self._lock:
                outs.append(self.runner.run(chunk))
        heads = outs[0] if len(outs) == 1 else _cat(outs)
        return heads.crop(h, w), single

    def _valid_heads(self, x) -> HeadOutputs:
        """Official tile mode for a valid-padding network (``hvx.model.hovernet_tiles``)."""
        from hvx.model.hovernet_tiles import run_valid

        max_batch = self.runner.max_batch

        def run(windows):
            with self._lock:
                return self.runner.run(windows)

        window, output = self.valid_window
        return run_valid(run, x, window, output, batch=max_batch or 8)

    def infer(self, batch, *, num_threads: int | None = None):
        """Segments and classifies the nuclei of a batch of tiles.

        Args:
            batch: uint8 RGB ``(N, H, W, 3)`` or one ``(H, W, 3)`` image, numpy or
                torch (CPU or CUDA); any H, W >= 1 (padded internally, cropped back).
            num_threads: Post-processing threads (default: all cores).

        Returns:
            ``hvx.results.BatchResult``: ``inst`` int32 (N, H, W), ``type`` uint8
            (N, H, W), one nuclei table per image, ``to_conic()``. A single image
            gives a batch of one.

        Raises:
            TypeError: If ``batch`` is not a numpy array or torch tensor.
            ValueError: For a wrong dtype, rank, channel count or an empty batch.
        """
        from hvx.postprocess import postprocess

        scale = self.scale
        if scale is not None:
            return self._infer_rescaled(batch, scale, num_threads)
        heads, _ = self.heads(batch)
        h = heads.numpy()  # the one device -> host copy, where post-processing needs it
        return postprocess(
            h.np_prob, h.hv, h.tp_prob, self.postprocess_config, num_threads=num_threads
        )

    @property
    def scale(self) -> float | None:
        """Input-to-model resize factor (``input_mpp / mpp``), None when 1."""
        if self.input_mpp is None:
            return None
        s = self.input_mpp / self.mpp
        return None if abs(s - 1.0) < 1e-3 else s

    def _infer_rescaled(self, batch, scale: float, num_threads: int | None):
        """Resizes to the model's resolution, infers, maps results back.

        Images: INTER_AREA when shrinking, INTER_LINEAR when enlarging. Instance
        and type maps come back with INTER_NEAREST (ids kept); tables are
        recomputed on the maps at the input resolution (centroid, bbox, area,
        contour in input pixels), keeping each nucleus's type probability.
        Nuclei that vanish when the maps are enlarged/shrunk back are dropped.
        """
        import cv2
        import torch

        from hvx.postprocess import instance_table, postprocess
        from hvx.results import BatchResult

        images, _ = _as_batch(batch)
        if isinstance(images, torch.Tensor):
            images = images.cpu().numpy()
        n, h, w = images.shape[:3]
        h2, w2 = max(1, round(h * scale)), max(1, round(w * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = np.stack([cv2.resize(im, (w2, h2), interpolation=interp) for im in images])
        hd = self.heads(small)[0].numpy()
        res = postprocess(
            hd.np_prob, hd.hv, hd.tp_prob, self.postprocess_config, num_threads=num_threads
        )
        inst = np.stack(
            [cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in res.inst]
        ).astype(np.int32)
        typ = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in res.type])
        tables = []
        for k in range(n):
            table = instance_table(inst[k], typ[k])
            src = res.tables[k]
            prob = dict(zip(src.id.tolist(), src.type_prob.tolist(), strict=True))
            ids, probs = table.id.tolist(), table.type_prob.tolist()
            table.type_prob = np.array(
                [prob.get(i, p) for i, p in zip(ids, probs, strict=True)],
                dtype=table.type_prob.dtype,
            )
            tables.append(table)
        return BatchResult(inst=inst, type=typ.astype(np.uint8), tables=tables)

    def __repr__(self) -> str:
        return (
            f"Engine(source={self.source!r}, backend={self.backend!r}, device={self.device!r}, "
            f"precision={self.precision!r}, classes={list(self.class_names)})"
        )


def _auto_cuda_precision(bundle, dev: str, path, model=None) -> str:
    """fp16 when it keeps this model's instance maps on ``dev``, else fp32 (logged).

    ``model``: the bundle's network if already built (it is not modified).
    """
    from hvx.precision import check_fp16

    model = bundle.build_model("cpu") if model is None else model
    check = check_fp16(model, bundle.preprocess, bundle.postprocess, device=dev)
    if check.ok:
        return "fp16"
    log.warning(
        "fp16 changes the results of %s (instance-map PQ %.3f against fp32 on %d sample "
        "tiles, largest head differences %s): running fp32; pass precision='fp16' to force it",
        path,
        check.pq,
        check.tiles,
        {k: round(v, 3) for k, v in check.max_abs.items()},
    )
    return "fp32"


def _cat(outs: list[HeadOutputs]) -> HeadOutputs:
    import torch

    def cat(items):
        return torch.cat(items) if isinstance(items[0], torch.Tensor) else np.concatenate(items)

    return HeadOutputs(
        cat([o.np_prob for o in outs]), cat([o.hv for o in outs]), cat([o.tp_prob for o in outs])
    )


def _resolve_device(device: str) -> str:
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


def load(path=None, backend: str = "auto", device: str = "auto", precision: str = "auto", **kw):
    """Shortcut for :meth:`Engine.load`."""
    return Engine.load(path, backend, device, precision, **kw)
