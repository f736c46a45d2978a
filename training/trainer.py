"""The training loop: data -> augment -> targets -> preprocess -> model -> loss -> SAM(AdamW).

Determinism. Every source of randomness is a function of ``config.seed`` and the
position in the run, or is saved in the checkpoint:

- model initialisation: ``torch.manual_seed(seed)`` before ``create_model``;
- data order of epoch e: a permutation from a ``torch.Generator`` seeded by
  ``(seed, e)``; the last incomplete batch is dropped;
- augmentation and crop of tile i in epoch e: ``np.random.default_rng([seed, e, i])``
  (so worker processes and their number do not matter);
- the torch CPU (and CUDA) RNG state (stochastic depth, dropout) and the
  optimiser, scheduler and GradScaler states are in the checkpoint.

So ``--resume`` from a checkpoint written at any step (end of epoch, every
``ckpt_every_steps``, on SIGINT/SIGTERM, at the time budget) continues exactly:
on the CPU the final weights equal those of an uninterrupted run.

Preprocessing is ``hvx.preprocess.preprocess``, the function inference uses,
applied per batch on the training device (numba on the CPU, Triton on CUDA).

Outputs in the run folder ``out``: ``config.yaml`` (the resolved config),
``checkpoints/last.safetensors`` (full state), ``checkpoints/best.safetensors``
(weights of the best validation), ``log.jsonl`` (one JSON line per epoch and per
validation) and ``bundle/`` (the model bundle, from the best weights; from the
last weights when no validation ran).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from tqdm.auto import tqdm

from hvx.bundle import save_bundle
from hvx.io.atomic import atomic_write
from hvx.metrics import conic_scores, pq_stats
from hvx.model import HoVerNet, HoVerNetInference, create_model
from hvx.model._net import rebalance_for_fp16
from hvx.postprocess import postprocess
from hvx.preprocess import IMPLS, preprocess
from hvx.training.augment import Augmenter
from hvx.training.checkpoint import load_checkpoint, save_checkpoint
from hvx.training.config import TrainConfig, dump_config
from hvx.training.data import TileDataset, load_dataset, split_by_source
from hvx.training.datasets import SplitDataset, parse_specs, split_datasets
from hvx.training.finetune import FinetuneSource, check_parent, read_finetune_weights
from hvx.training.losses import HoVerLoss
from hvx.training.sam import SAM
from hvx.training.targets import make_targets

__all__ = ["TrainResult", "TrainTiles", "Trainer", "evaluate", "prepare_dataset"]

log = logging.getLogger("hvx.training")

#: Config fields that may differ between a checkpoint and a ``--resume`` run.
RESUMABLE_CHANGES = (
    "epochs",
    "num_workers",
    "val_every",
    "ckpt_every_steps",
    "val_batch_size",
    "channels_last",  # memory layout only (a resumed run then differs by float rounding)
)


# ---- data ------------------------------------------------------------------------------


def _resize_tiles(ds: TileDataset, scale: float) -> TileDataset:
    """Resizes every tile by ``scale`` (images INTER_AREA, labels nearest)."""
    n, h, w = ds.inst.shape
    nh, nw = round(h * scale), round(w * scale)
    images = np.empty((n, nh, nw, 3), np.uint8)
    inst = np.empty((n, nh, nw), ds.inst.dtype)
    cls = np.empty((n, nh, nw), ds.cls.dtype)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    for i in range(n):
        images[i] = cv2.resize(ds.images[i], (nw, nh), interpolation=interp)
        inst[i] = cv2.resize(ds.inst[i].astype(np.int32), (nw, nh), interpolation=cv2.INTER_NEAREST)
        cls[i] = cv2.resize(ds.cls[i], (nw, nh), interpolation=cv2.INTER_NEAREST)
    return dataclasses.replace(ds, images=images, inst=inst, cls=cls)


def prepare_dataset(ds: TileDataset, config: TrainConfig) -> tuple[TileDataset, tuple[str, ...]]:
    """Applies the config's class map and scale to a loaded dataset.

    Returns:
        ``(dataset, class_names)``: the (resized, relabelled) dataset and the
        names of the model's classes 1..C.

    Raises:
        ValueError: If the class map sends ids beyond the class names.
    """
    dc = config.data
    cls = ds.cls
    if dc.class_map:
        lut = np.arange(max(256, int(cls.max()) + 1), dtype=np.int64)
        for k, v in dc.class_map.items():
            if k < lut.size:
                lut[k] = v
        cls = lut[cls].astype(np.uint8)
    names = tuple(dc.class_names) if dc.class_names is not None else tuple(ds.class_names)
    top = int(cls.max()) if cls.size else 0
    if top > len(names):
        raise ValueError(
            f"expected class ids <= {len(names)} (class names {list(names)}), got class id {top}; "
            "set data.class_names or data.class_map"
        )
    ds = dataclasses.replace(ds, cls=cls, class_names=names)
    if dc.scale != 1.0:
        ds = _resize_tiles(ds, dc.scale)
    return ds, names


class TrainTiles(torch.utils.data.Dataset):
    """Training samples: augment -> random crop -> targets, keyed by ``(epoch, index)``.

    The uint8 image is returned as is; preprocessing runs per batch on the
    training device (the same ``hvx.preprocess.preprocess`` as inference).

    Args:
        ds: The training tiles, or a list of datasets (tile sizes may differ between
            them): index i runs over their tiles in order.
        augmenter: The augmentation.
        crop_size: Edge of the square crop (<= tile size).
        seed: Run seed.

    ``__getitem__((epoch, i))`` returns ``{"image": Tensor[H, W, 3] uint8,
    "np": Tensor[H, W] int64, "hv": Tensor[2, H, W] float32, "tp": Tensor[H, W] int64,
    "tp_valid": Tensor[] bool}`` (``tp_valid`` False: the tile has no class labels).
    """

    def __init__(
        self, ds: TileDataset | list[TileDataset], augmenter: Augmenter, crop_size: int, seed: int
    ) -> None:
        self.parts = [ds] if isinstance(ds, TileDataset) else list(ds)
        for part in self.parts:
            h, w = part.inst.shape[1:]
            if crop_size > min(h, w):
                raise ValueError(f"expected data.crop_size <= tile size {h}x{w}, got {crop_size}")
        self.ds = self.parts[0]
        self.sizes = [len(p) for p in self.parts]
        self.offsets = np.cumsum([0, *self.sizes])
        self.augmenter, self.crop, self.seed = augmenter, crop_size, seed

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, i = key
        rng = np.random.default_rng([self.seed, epoch, i])
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        part, j = self.parts[k], i - int(self.offsets[k])
        image, inst, cls = self.augmenter(part.images[j], part.inst[j], part.cls[j], rng)
        h, w = inst.shape
        y0 = int(rng.integers(0, h - self.crop + 1))
        x0 = int(rng.integers(0, w - self.crop + 1))
        sl = (slice(y0, y0 + self.crop), slice(x0, x0 + self.crop))
        image, inst, cls = image[sl], inst[sl], cls[sl]
        t = make_targets(inst, cls)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "np": torch.from_numpy(np.ascontiguousarray(t["np"], dtype=np.int64)),
            "hv": torch.from_numpy(np.ascontiguousarray(t["hv"], dtype=np.float32)),
            "tp": torch.from_numpy(np.ascontiguousarray(t["tp"], dtype=np.int64)),
            "tp_valid": torch.tensor(bool(part.typed[j])),  # type: ignore[index]
        }


def _one_cv2_thread(worker_id: int) -> None:
    """DataLoader workers: one OpenCV thread each (the workers are the parallelism)."""
    cv2.setNumThreads(1)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The tile order of an epoch: a permutation of ``range(n)`` from ``(seed, epoch)``."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1))
    return torch.randperm(n, generator=g)


def weighted_order(sizes: list[int], weights: list[float], seed: int, epoch: int) -> torch.Tensor:
    """A pass over several datasets drawn by weight, from ``(seed, epoch)``.

    The pass has ``sum(sizes)`` keys; dataset k gets a share ``weights[k] /
    sum(weights)`` of them (largest remainder), taken from consecutive
    permutations of its tiles (so no tile repeats before all were seen), and
    the keys of all datasets are shuffled together. Indices are global (dataset
    k's tiles follow those of datasets 0..k-1). One dataset: ``epoch_order``.
    """
    if len(sizes) == 1:
        return epoch_order(sizes[0], seed, epoch)
    from hvx.training.data import _allocate

    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1))
    counts = _allocate([float(w) for w in weights], sum(sizes))
    keys, offset = [], 0
    for n, c in zip(sizes, counts, strict=True):
        reps = [torch.randperm(n, generator=g) for _ in range(-(-c // n))] if n else []
        if reps:
            keys.append(torch.cat(reps)[:c] + offset)
        offset += n
    allk = torch.cat(keys)
    return allk[torch.randperm(len(allk), generator=g)]


class _EpochBatches(torch.utils.data.Sampler):
    """Batches of ``(pass, index)`` keys of one epoch, from step ``start`` on.

    An epoch is ``repeats`` passes over the tiles, pass ``epoch * repeats + r``
    each in its own order; with ``repeats=1`` a key is ``(epoch, index)``.
    With several datasets (``sizes``, ``weights``) a pass is :func:`weighted_order`.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        epoch: int,
        start: int,
        repeats: int = 1,
        sizes: list[int] | None = None,
        weights: list[float] | None = None,
    ) -> None:
        sizes = [n] if sizes is None else sizes
        weights = [1.0] * len(sizes) if weights is None else weights
        keys = [
            (p, i)
            for p in range(epoch * repeats, (epoch + 1) * repeats)
            for i in weighted_order(sizes, weights, seed, p).tolist()
        ]
        steps = len(keys) // batch_size
        self.batches = [keys[s * batch_size : (s + 1) * batch_size] for s in range(start, steps)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


# ---- validation ------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: HoVerNet,
    ds: TileDataset,
    config: TrainConfig,
    device: torch.device,
    *,
    amp: bool = False,
    amp_dtype: str = "float16",
    preprocess_impl: str = "auto",
) -> dict[str, Any]:
    """Validation: whole tiles -> model -> probabilities -> post-processing -> CoNiC metrics.

    Args:
        model: The network (put in eval mode here, then restored).
        ds: Validation tiles (class ids 1..C).
        config: Supplies preprocessing, post-processing and the batch size.
        device: Where the model runs.
        amp: Autocast (CUDA).
        amp_dtype: Its dtype, "float16" or "bfloat16".
        preprocess_impl: ``hvx.preprocess.preprocess``'s ``impl``.

    Returns:
        ``{"pq": binary PQ, "mpq_plus": mPQ+, "pq_plus": [per class], "tiles": N}``;
        for tiles without class labels (``ds.typed`` False) ``{"pq", "dq", "sq",
        "tiles"}`` (per-image binary values, averaged). Images larger than
        256 x 256 go in proportionally smaller batches (at least one).
    """
    was_training = model.training
    model.eval()
    infer = HoVerNetInference(model)
    num_classes = len(ds.class_names)
    preds = []
    m = model.size_multiple
    bs = max(1, config.val_batch_size * 256 * 256 // int(np.prod(ds.inst.shape[1:])))
    try:
        for s in range(0, len(ds.images), bs):
            imgs = torch.from_numpy(ds.images[s : s + bs]).to(device)
            x = preprocess(
                imgs, config.preprocess, device=device, dtype=torch.float32, impl=preprocess_impl
            )
            h, w = x.shape[-2:]
            ph, pw = (-h) % m, (-w) % m
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph), mode="reflect")
            with _autocast(device, amp, amp_dtype):
                np_prob, hv, tp_prob = infer(x)
            np_prob = np_prob[..., :h, :w].float().cpu().numpy()
            hv = hv[..., :h, :w].float().cpu().numpy()
            tp_prob = tp_prob[..., :h, :w].float().cpu().numpy()
            preds.append(postprocess(np_prob, hv, tp_prob, config.postprocess).to_conic())
    finally:
        model.train(was_training)
    pred = np.concatenate(preds)
    if not ds.typed.all():  # type: ignore[union-attr]
        stats = [pq_stats(ds.inst[i], pred[i, ..., 0]) for i in range(len(pred))]
        return {
            "pq": float(np.mean([st.pq for st in stats])),
            "dq": float(np.mean([st.dq for st in stats])),
            "sq": float(np.mean([st.sq for st in stats])),
            "tiles": len(ds.images),
        }
    true = np.stack([ds.inst.astype(np.int32), ds.cls.astype(np.int32)], axis=-1)
    scores = conic_scores(true, pred, num_classes=num_classes)
    return {
        "pq": float(scores.pq),
        "mpq_plus": float(scores.mpq_plus),
        "pq_plus": [float(v) for v in np.asarray(scores.pq_plus).ravel()],
        "tiles": len(ds.images),
    }


def _combine(per: dict[str, dict]) -> dict[str, Any]:
    """One validation record from per-dataset ones.

    One dataset: its record. Several: ``pq`` is the mean of their binary PQs,
    ``mpq_plus``/``pq_plus`` come from the datasets with class labels (mean /
    the first), and ``datasets`` keeps every record.
    """
    if len(per) == 1:
        return dict(next(iter(per.values())))
    typed = [m for m in per.values() if "mpq_plus" in m]
    return {
        "pq": float(np.mean([m["pq"] for m in per.values()])),
        "mpq_plus": float(np.mean([m["mpq_plus"] for m in typed])) if typed else 0.0,
        "pq_plus": typed[0]["pq_plus"] if typed else [],
        "tiles": sum(m["tiles"] for m in per.values()),
        "datasets": per,
    }


def _scaled(ds: TileDataset, dc: Any) -> TileDataset:
    return _resize_tiles(ds, dc.scale) if dc.scale != 1.0 else ds


def _part_record(p: SplitDataset) -> dict[str, Any]:
    return {
        "name": p.name,
        "weight": p.weight,
        "typed": p.typed,
        "train_tiles": len(p.train),
        "val_images": len(p.val),
        "val_sources": sorted(set(p.val.sources)),
    }


def _autocast(device: torch.device, enabled: bool, dtype: str = "float16"):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=getattr(torch, dtype))
    return contextlib.nullcontext()


# ---- the trainer -----------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did.

    Attributes:
        status: "completed", "time_budget" or "interrupted" (SIGINT/SIGTERM).
        epochs_done: Completed epochs.
        global_step: Optimiser steps taken in the whole run.
        bundle: The bundle folder (None when interrupted: resume to finish).
        best: The best validation metrics (None if no validation ran).
        history: Every validation, in order.
    """

    status: str
    epochs_done: int
    global_step: int
    bundle: Path | None
    best: dict | None
    history: list[dict]


class Trainer:
    """Trains a HoVerNet from a :class:`TrainConfig` on a dataset folder.

    Args:
        config: The resolved config.
        data: Dataset path (CoNiC npy folder or CoNSeP-style folder) or a loaded
            :class:`TileDataset`.
        out: Run folder (created).
        device: "cpu", "cuda", "cuda:1" or "auto".
        max_minutes: Time budget of this invocation; on expiry the run stops after
            the current step with a checkpoint, a validation and a bundle.
        resume: Continue from ``out/checkpoints/last.safetensors``.
        progress: Show tqdm bars.
        preprocess_impl: ``hvx.preprocess.preprocess``'s ``impl`` ("auto": Triton on
            CUDA, numba on the CPU); every implementation gives the same input.
    """

    def __init__(
        self,
        config: TrainConfig,
        data: str | os.PathLike | TileDataset,
        out: str | os.PathLike,
        *,
        device: str = "auto",
        max_minutes: float | None = None,
        resume: bool = False,
        progress: bool = True,
        preprocess_impl: str = "auto",
    ) -> None:
        if preprocess_impl not in IMPLS:
            raise ValueError(f"expected preprocess_impl one of {IMPLS}, got {preprocess_impl!r}")
        self.preprocess_impl = preprocess_impl
        if max_minutes is not None and not max_minutes > 0:
            raise ValueError(f"expected max_minutes > 0, got {max_minutes}")
        self.config = config
        self.out = Path(out)
        self.device = _pick_device(device)
        self.max_minutes = max_minutes
        self.resume = resume
        self.progress = progress
        self.parts = self._load_parts(config, data)
        typed = [p for p in self.parts if p.typed]
        self.train_ds, self.val_ds = self.parts[0].train, (typed or self.parts)[0].val
        n_train = sum(len(p.train) for p in self.parts)
        if n_train < config.batch_size:
            raise ValueError(
                f"expected at least batch_size={config.batch_size} training tiles, got {n_train}"
            )
        if config.optim.budget_decay is not None and max_minutes is None:
            raise ValueError(
                f"optim.budget_decay={config.optim.budget_decay} is a fraction of the time "
                "budget: it needs max_minutes (--max-minutes)"
            )
        self.amp = config.amp and self.device.type == "cuda"
        if self.device.type == "cuda":
            # TF32 matrix products and convolutions, autotuned (training crops are one size)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(config.seed)
        self.model = create_model(
            config.model.variant,
            in_chans=config.in_chans,
            num_types=len(self.class_names) + 1,
            init_from=config.model.init_from,
        )
        self.finetune_source: FinetuneSource | None = None
        # a resumed run's weights come from its own checkpoint (which also records
        # the parent): the parent is not read again and need not exist any more
        if config.model.finetune_from and not resume:
            self.finetune_source = read_finetune_weights(
                config.model.finetune_from, self.model, config.model.variant
            )
            parent = set(self.finetune_source.get("val_sources") or ())
            mine = [set(p.val.sources) for p in self.parts]
            # the parent's dataset: the one holding its held-out images (else all)
            same = [v for v in mine if v & parent] or mine
            check_parent(self.finetune_source, set().union(*same), tuple(self.class_names))
        self.model.to(self.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        m = self.model.size_multiple
        if config.data.crop_size % m:
            raise ValueError(
                f"expected data.crop_size a multiple of {m} for {config.model.variant}, "
                f"got {config.data.crop_size}"
            )
        self.loss_fn = HoVerLoss(config.loss)
        oc = config.optim
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=oc.lr,
            betas=oc.betas,
            eps=oc.eps,
            weight_decay=oc.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=oc.step_size, gamma=oc.gamma
        )
        # bfloat16 has float32's range: no loss scaling
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp and config.amp_dtype == "float16"
        )
        self.sam = SAM(self.optimizer, rho=oc.rho, scaler=self.scaler) if oc.sam else None
        self.tiles = TrainTiles(
            [p.train for p in self.parts],
            Augmenter(config.augment),
            config.data.crop_size,
            config.seed,
        )
        self.steps_per_epoch = len(self.tiles) * config.data.epoch_repeats // config.batch_size
        # run state (what a checkpoint restores)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.history: list[dict] = []
        self.best: dict | None = None
        self.train_seconds = 0.0
        self.budget_decayed = False
        self._stop: str | None = None

    def _load_parts(self, config: TrainConfig, data: Any) -> list[SplitDataset]:
        """The run's datasets, split (``data.datasets``, or ``data`` alone)."""
        dc = config.data
        if dc.datasets is not None:
            if data is not None:
                raise ValueError(
                    "expected either data (--data) or data.datasets in the config, got both"
                )
            specs = parse_specs(dc.datasets)
            self.data_source = ", ".join(s.path for s in specs)

            def prepare(ds: TileDataset) -> TileDataset:
                return prepare_dataset(ds, config)[0] if ds.typed.all() else _scaled(ds, dc)

            parts = split_datasets(
                specs, val_fraction=dc.val_fraction, seed=dc.split_seed, prepare=prepare
            )
            typed = [p for p in parts if p.typed]
            if not typed:
                raise ValueError("expected at least one dataset with class labels, got none")
            names = {p.val.class_names for p in typed}
            if len(names) > 1:
                raise ValueError(f"expected one set of class names over datasets, got {names}")
            self.class_names = typed[0].val.class_names
        else:
            if data is None:
                raise ValueError("expected a dataset (--data) or data.datasets in the config")
            self.data_source = str(data) if not isinstance(data, TileDataset) else "<in memory>"
            ds = load_dataset(data) if not isinstance(data, TileDataset) else data
            ds, self.class_names = prepare_dataset(ds, config)
            train_idx, val_idx = split_by_source(
                ds.sources, val_fraction=dc.val_fraction, seed=dc.split_seed
            )
            name = Path(self.data_source).name
            parts = [SplitDataset(name, ds.subset(train_idx), ds.subset(val_idx), 1.0, True)]
        for p in parts:
            if dc.max_train_tiles is not None:
                p.train = p.train.subset(np.arange(min(len(p.train), dc.max_train_tiles)))
            if dc.max_val_tiles is not None:
                p.val = p.val.subset(np.arange(min(len(p.val), dc.max_val_tiles)))
        return parts

    # -- checkpoints ---------------------------------------------------------------------

    @property
    def ckpt_dir(self) -> Path:
        """``out/checkpoints``."""
        return self.out / "checkpoints"

    def _state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "history": self.history,
            "best": self.best,
            "train_seconds": self.train_seconds,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "budget_decayed": self.budget_decayed,
            "config": self.config.to_dict(),
            "finetuned_from": self.finetune_source,
        }

    def save(self) -> Path:
        """Writes ``checkpoints/last.safetensors`` (full state, atomically)."""
        return save_checkpoint(
            self.ckpt_dir / "last.safetensors",
            model=self.model,
            state=self._state(),
            optimizer=self.optimizer,
        )

    def _load(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        saved = ckpt.state.get("config", {})
        mine = self.config.to_dict()
        diffs = sorted(
            k
            for k in set(saved) | set(mine)
            if saved.get(k) != mine.get(k) and k not in RESUMABLE_CHANGES
        )
        if diffs:
            raise ValueError(
                f"cannot resume from {path}: the config differs in {', '.join(diffs)} "
                f"(only {', '.join(RESUMABLE_CHANGES)} may change on --resume)"
            )
        if ckpt.optimizer is None:
            raise ValueError(
                f"cannot resume from {path}: it holds weights only, no optimizer state"
            )
        try:
            self.model.load_state_dict(ckpt.model)
            self.optimizer.load_state_dict(ckpt.optimizer)
        except (RuntimeError, ValueError, KeyError) as e:
            raise ValueError(f"checkpoint {path} does not fit this model/optimizer: {e}") from None
        st = ckpt.state
        self.scheduler.load_state_dict(st["scheduler"])
        self.budget_decayed = st.get("budget_decayed", False)
        if self.scaler.is_enabled() and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        torch.set_rng_state(ckpt.rng["torch_cpu"])
        if "torch_cuda" in ckpt.rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt.rng["torch_cuda"], self.device)
        self.epoch, self.step_in_epoch = st["epoch"], st["step_in_epoch"]
        self.global_step = st["global_step"]
        self.history, self.best = st["history"], st["best"]
        self.train_seconds = st["train_seconds"]
        if st.get("finetuned_from") is not None:
            self.finetune_source = FinetuneSource(st["finetuned_from"])

    # -- one step ------------------------------------------------------------------------

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimiser step (two forward/backward passes with SAM); returns the losses."""
        dev = self.device
        x = preprocess(
            batch["image"].to(dev),
            self.config.preprocess,
            device=dev,
            dtype=torch.float32,
            impl=self.preprocess_impl,
        )
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        targets = {k: batch[k].to(dev) for k in ("np", "hv", "tp")}
        if "tp_valid" in batch:
            targets["tp_valid"] = batch["tp_valid"].to(dev)
        parts: dict[str, torch.Tensor] = {}

        def closure() -> torch.Tensor:
            with _autocast(dev, self.amp, self.config.amp_dtype):
                out = self.model(x)
            loss, p = self.loss_fn(out, targets)
            if not parts:
                parts.update(p)
            self.scaler.scale(loss).backward()
            return loss

        if self.sam is not None:
            loss = self.sam.step(closure, model=self.model)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            loss = closure().detach()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return {"loss": float(loss), **{k: float(v) for k, v in parts.items()}}

    # -- the loop ------------------------------------------------------------------------

    def _loader(self, epoch: int, start: int) -> torch.utils.data.DataLoader:
        cfg = self.config
        sampler = _EpochBatches(
            len(self.tiles),
            cfg.batch_size,
            cfg.seed,
            epoch,
            start,
            cfg.data.epoch_repeats,
            sizes=self.tiles.sizes,
            weights=[p.weight for p in self.parts],
        )
        return torch.utils.data.DataLoader(
            self.tiles,
            batch_sampler=sampler,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_one_cv2_thread,
            # its own generator: creating an iterator must not draw from the global
            # torch RNG (that would shift stochastic depth after a resume)
            generator=torch.Generator().manual_seed(self.config.seed + epoch),
        )

    def _log(self, record: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _validate(self) -> dict:
        per = {
            p.name: evaluate(
                self.model,
                p.val,
                self.config,
                self.device,
                amp=self.amp,
                amp_dtype=self.config.amp_dtype,
                preprocess_impl=self.preprocess_impl,
            )
            for p in self.parts
        }
        metrics = _combine(per)
        metrics.update(epoch=self.epoch, global_step=self.global_step)
        self.history.append(metrics)
        key = self.config.best_metric
        if self.best is None or metrics[key] > self.best[key]:
            self.best = metrics
            save_checkpoint(
                self.ckpt_dir / "best.safetensors", model=self.model, state=self._state()
            )
        self._log({"event": "validation", **metrics})
        each = "".join(f"  {n} PQ {m['pq']:.4f}" for n, m in metrics.get("datasets", {}).items())
        self._write(
            f"epoch {self.epoch}: PQ {metrics['pq']:.4f}  mPQ+ {metrics['mpq_plus']:.4f}  "
            f"(best {key} {self.best[key]:.4f}){each}"
        )
        return metrics

    def _write(self, msg: str) -> None:
        if self.progress:
            tqdm.write(msg)
        log.info(msg)

    def _maybe_budget_decay(self, spent: float, budget: float) -> None:
        """``optim.budget_decay``: lr x gamma once, at that fraction of the budget."""
        frac = self.config.optim.budget_decay
        if frac is None or self.budget_decayed or spent < frac * budget:
            return
        for group in self.optimizer.param_groups:
            group["lr"] *= self.config.optim.gamma
        self.budget_decayed = True
        self._log({"event": "budget_decay", "global_step": self.global_step, "seconds": spent})
        self._write(
            f"learning rate x {self.config.optim.gamma} after {spent:.0f} s "
            f"({frac:.0%} of the time budget), step {self.global_step}"
        )

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop = "interrupted"
        self._signal = signum

    def fit(self) -> TrainResult:
        """Runs (or resumes) the training; see the module docstring for the outputs."""
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        last = self.ckpt_dir / "last.safetensors"
        if self.resume:
            self._load(last)
            self._write(f"resumed from {last} at epoch {self.epoch}, step {self.step_in_epoch}")
        elif last.exists():
            raise ValueError(
                f"{self.out} already holds a run ({last}); pass --resume to continue it "
                "or choose another --out"
            )
        atomic_write(self.out / "config.yaml", dump_config(cfg))
        handlers = self._install_signal_handlers()
        t_start = time.monotonic()
        budget = self.max_minutes * 60 if self.max_minutes else math.inf
        validated_at = self.history[-1]["global_step"] if self.history else -1
        self.model.train()
        try:
            while self.epoch < cfg.epochs and self._stop is None:
                loader = self._loader(self.epoch, self.step_in_epoch)
                bar = tqdm(
                    loader,
                    total=self.steps_per_epoch,
                    initial=self.step_in_epoch,
                    desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                    disable=not self.progress,
                    leave=False,
                )
                t_epoch = time.monotonic()
                sums: dict[str, float] = {}
                counts: dict[str, int] = {}
                for batch in bar:
                    losses = self.train_step(batch)
                    for k, v in losses.items():
                        sums[k] = sums.get(k, 0.0) + v
                        counts[k] = counts.get(k, 0) + 1
                    self.step_in_epoch += 1
                    self.global_step += 1
                    bar.set_postfix(loss=f"{losses['loss']:.4f}")
                    spent = time.monotonic() - t_start
                    if spent > budget:
                        self._stop = "time_budget"
                    self._maybe_budget_decay(spent, budget)
                    if self._stop is not None:
                        break
                    every = cfg.ckpt_every_steps
                    if every and self.global_step % every == 0:
                        self.save()
                bar.close()
                self.train_seconds += time.monotonic() - t_epoch
                if self.step_in_epoch >= self.steps_per_epoch:
                    self.epoch += 1
                    self.step_in_epoch = 0
                    self.scheduler.step()
                    self._log(
                        {
                            "event": "epoch",
                            "epoch": self.epoch,
                            "global_step": self.global_step,
                            "lr": self.scheduler.get_last_lr()[0],
                            **losses,
                            # means over the steps of this invocation's part of the epoch
                            **{f"mean_{k}": sums[k] / counts[k] for k in sums},
                        }
                    )
                    if self._stop is None and (
                        self.epoch % cfg.val_every == 0 or self.epoch == cfg.epochs
                    ):
                        self._validate()
                        validated_at = self.global_step
                    self.save()
            if self._stop == "interrupted":
                self.save()
                self._write(f"interrupted: checkpoint {last}; resume with --resume")
                return self._result(None)
            if validated_at != self.global_step:
                self._validate()
            self.save()
            bundle = self._write_bundle()
            status = self._stop or "completed"
            return self._result(bundle, status)
        finally:
            self._restore_signal_handlers(handlers)

    def _result(self, bundle: Path | None, status: str = "interrupted") -> TrainResult:
        return TrainResult(
            status=status,
            epochs_done=self.epoch,
            global_step=self.global_step,
            bundle=bundle,
            best=self.best,
            history=list(self.history),
        )

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, self._on_signal)
        return old

    @staticmethod
    def _restore_signal_handlers(old: dict) -> None:
        for sig, h in old.items():
            signal.signal(sig, h)

    def _write_bundle(self) -> Path:
        cfg = self.config
        best_path = self.ckpt_dir / "best.safetensors"
        model = create_model(
            cfg.model.variant, in_chans=cfg.in_chans, num_types=len(self.class_names) + 1
        )
        if self.best is not None and best_path.exists():
            model.load_state_dict(load_checkpoint(best_path).model)
            weights = "best"
        else:
            model.load_state_dict({k: v.cpu() for k, v in self.model.state_dict().items()})
            weights = "last"
        # same function, BatchNorm statistics inside float16's range (fp16 inference)
        rebalanced = rebalance_for_fp16(model.eval())
        from hvx.provenance import provenance

        multi = self.config.data.datasets is not None
        prov = {
            "config": cfg.to_dict(),
            "data": {
                "source": self.data_source,
                "train_tiles": sum(len(p.train) for p in self.parts),
                "val_tiles": sum(len(p.val) for p in self.parts),
                "val_sources": sorted({s for p in self.parts for s in p.val.sources}),
                **({"datasets": [_part_record(p) for p in self.parts]} if multi else {}),
            },
            "seed": cfg.seed,
            "finetuned_from": self.finetune_source,
            "weights": weights,
            "fp16_rebalanced": rebalanced,
            "epochs_done": self.epoch,
            "global_step": self.global_step,
            "train_seconds": round(self.train_seconds, 1),
            "device": str(self.device),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "machine": provenance(),
        }
        metrics = {"validation": self.best, "history": self.history}
        return save_bundle(
            self.out / "bundle",
            model,
            class_names=self.class_names,
            mpp=cfg.model_mpp,
            preprocess=cfg.preprocess,
            postprocess=cfg.postprocess,
            provenance=prov,
            metrics=metrics,
        )


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"expected device 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch.cuda.is_available() is False")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"expected device 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return dev
