"""``hvx.Engine``: load a model bundle or TensorRT plan, pick a backend, ``infer``.

The one inference path of hvx: ``Engine.load`` builds it from a bundle or plan
(:mod:`hvx.loading` picks the runner), ``Engine.from_model`` around a network in
memory (:mod:`hvx.model_runner`; the trainer's validation and the fp16 check).

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

from hvx import registry
from hvx.backends.base import BACKEND_NAMES, HeadOutputs
from hvx.loading import CPU_BACKEND_PREFERENCE, bundle_runner, plan_runner, resolve_device
from hvx.postprocess import PostprocessConfig, instance_table, postprocess
from hvx.results import BatchResult

__all__ = ["CPU_BACKEND_PREFERENCE", "Engine", "load"]

log = logging.getLogger("hvx.engine")


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

    Build one with :meth:`Engine.load` (a bundle or plan) or :meth:`Engine.from_model`
    (a network in memory). Attributes are read-only facts:

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
        mpp: Microns per pixel the model was trained at (None: not known, only
            from :meth:`from_model`).
        input_mpp: Microns per pixel of the images given to :meth:`infer`, or
            None when they are at the model's resolution. When it differs,
            images are resized to the model's resolution and the results back.
        source: The bundle folder or plan file loaded.
        preprocess_impl: ``hvx.preprocess.preprocess``'s ``impl`` ("auto": Triton on
            CUDA, numba on the CPU; every implementation gives the same input).
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
        mpp: float | None,
        source: str,
        valid_window: tuple[int, int] | None = None,
        preprocess_impl: str = "auto",
    ) -> None:
        from hvx.preprocess import IMPLS

        if preprocess_impl not in IMPLS:
            raise ValueError(f"expected preprocess_impl one of {IMPLS}, got {preprocess_impl!r}")
        self.runner = runner
        self.preprocess_config = preprocess_config
        self.postprocess_config = postprocess_config
        self.class_names = tuple(class_names)
        self.class_colors = tuple(tuple(int(v) for v in c) for c in class_colors)
        self.num_types = int(num_types)
        self.size_multiple = int(size_multiple)
        self.mpp = None if mpp is None else float(mpp)
        self.preprocess_impl = preprocess_impl
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
        dev = resolve_device(device)
        if path is None:
            from hvx.assets import default_model_path

            path = default_model_path()

        if registry.is_registered(path) and not Path(path).exists():
            path = registry.fetch(path, cache_dir)  # downloaded and converted once
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"expected a model bundle folder or a .plan file, got {path}")
        if path.is_file():
            runner, meta = plan_runner(path, backend, dev)
        else:
            runner, meta = bundle_runner(path, backend, dev, precision, cache_dir, plan_settings)
        engine = cls._from_meta(runner, meta, str(path))
        engine.input_mpp = None if mpp is None else float(mpp)
        return engine

    @classmethod
    def _from_meta(cls, runner, meta: dict, source: str) -> Engine:
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
    def from_model(
        cls,
        model,
        preprocess_config,
        postprocess_config,
        *,
        class_names=None,
        class_colors=None,
        mpp: float | None = None,
        amp: str | None = None,
        preprocess_impl: str = "auto",
        source: str = "<in-memory model>",
    ) -> Engine:
        """An Engine around an in-memory network: the inference path of a bundle, unsaved.

        The same preprocessing, padding (or valid-window tiling), cropping and
        post-processing as :meth:`load`; the network runs as it is, on its own
        device and in its own dtype (:class:`hvx.model_runner.ModelRunner`: not
        moved, not cast, not frozen; eval mode during each call only). So a
        model being trained is validated, and a bundle's float32/float16 copies
        are compared, exactly as users will run them. On the CPU in float32 it
        gives what ``Engine.load(bundle, backend="torch", precision="fp32")``
        gives for the same weights, bit for bit.

        Args:
            model: A ``hvx.model`` network (``HoVerNet`` or ``OfficialHoVerNet``).
            preprocess_config: ``hvx.preprocess.PreprocessConfig``.
            postprocess_config: ``hvx.postprocess.PostprocessConfig``.
            class_names: Names of type ids 1..num_types-1 (default ``type1``, ...).
            class_colors: RGB per class (default: the bundle palette).
            mpp: Microns per pixel the model works at (None: not known; then
                ``input_mpp`` cannot be set).
            amp: CUDA autocast dtype, "float16" or "bfloat16" (mixed precision, as
                in training); None runs the parameters' dtype.
            preprocess_impl: ``hvx.preprocess.preprocess``'s ``impl``.
            source: What :attr:`source` reports.

        Raises:
            ValueError: For a bad ``amp`` / ``preprocess_impl``, or class names or
                colours that do not fit the type head.
        """
        from hvx.bundle import DEFAULT_COLORS
        from hvx.model_runner import ModelRunner

        runner = ModelRunner(model, amp=amp)
        num_types = int(model.num_types)
        names = (
            tuple(f"type{i}" for i in range(1, num_types))
            if class_names is None
            else tuple(class_names)
        )
        colors = (
            [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(len(names))]
            if class_colors is None
            else class_colors
        )
        if len(names) != num_types - 1 or len(colors) != len(names):
            raise ValueError(
                f"expected {num_types - 1} class names and colours (the type head has "
                f"{num_types} types), got {len(names)} names and {len(colors)} colours"
            )
        window = getattr(model, "window", None)
        return cls(
            runner,
            preprocess_config=preprocess_config,
            postprocess_config=postprocess_config,
            class_names=names,
            class_colors=colors,
            num_types=num_types,
            size_multiple=model.size_multiple,
            mpp=mpp,
            source=source,
            valid_window=None if not window else (window, model.output),
            preprocess_impl=preprocess_impl,
        )

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
            impl=self.preprocess_impl,
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
        scale = self.scale
        if scale is not None:
            return self._infer_rescaled(batch, scale, num_threads)
        heads, _ = self.heads(batch)
        return self.postprocess(heads, num_threads=num_threads)

    def postprocess(self, heads: HeadOutputs, *, num_threads: int | None = None):
        """Instances, types and nucleus tables of :meth:`heads`' output (this model's config).

        Args:
            heads: ``HeadOutputs`` (torch tensors on any device, or numpy arrays).
            num_threads: Post-processing threads (default: all cores).

        Returns:
            ``hvx.results.BatchResult``.
        """
        h = heads.numpy()  # the one device -> host copy, where post-processing needs it
        return postprocess(
            h.np_prob, h.hv, h.tp_prob, self.postprocess_config, num_threads=num_threads
        )

    @property
    def scale(self) -> float | None:
        """Input-to-model resize factor (``input_mpp / mpp``), None when 1."""
        if self.input_mpp is None:
            return None
        if self.mpp is None:
            raise ValueError(
                f"expected the model's mpp to rescale images at input_mpp={self.input_mpp}, "
                "got none (pass mpp= to Engine.from_model)"
            )
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

        images, _ = _as_batch(batch)
        if isinstance(images, torch.Tensor):
            images = images.cpu().numpy()
        n, h, w = images.shape[:3]
        h2, w2 = max(1, round(h * scale)), max(1, round(w * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = np.stack([cv2.resize(im, (w2, h2), interpolation=interp) for im in images])
        res = self.postprocess(self.heads(small)[0], num_threads=num_threads)
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


def _cat(outs: list[HeadOutputs]) -> HeadOutputs:
    import torch

    def cat(items):
        return torch.cat(items) if isinstance(items[0], torch.Tensor) else np.concatenate(items)

    return HeadOutputs(
        cat([o.np_prob for o in outs]), cat([o.hv for o in outs]), cat([o.tp_prob for o in outs])
    )


def load(path=None, backend: str = "auto", device: str = "auto", precision: str = "auto", **kw):
    """Shortcut for :meth:`Engine.load`."""
    return Engine.load(path, backend, device, precision, **kw)
