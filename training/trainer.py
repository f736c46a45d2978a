"""The training loop: data -> augment -> targets -> preprocess -> model -> loss -> SAM(AdamW).

The run's pieces, one module each: its datasets (``hvx.training.prepare``), the
samples and their order (``hvx.training.sampling``), validation through
``hvx.Engine.from_model`` (``hvx.training.validation``), checkpoints and resume
(``hvx.training.run_state``) and the final bundle (``hvx.training.run_bundle``).

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
import json
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hvx.io.atomic import atomic_write
from hvx.model import HoVerNet, create_model
from hvx.preprocess import IMPLS, preprocess
from hvx.training.augment import Augmenter
from hvx.training.checkpoint import save_checkpoint
from hvx.training.config import TrainConfig, dump_config
from hvx.training.data import TileDataset
from hvx.training.finetune import (
    FinetuneSource,
    check_parent,
    freeze_batchnorm,
    read_finetune_weights,
)
from hvx.training.losses import HoVerLoss
from hvx.training.prepare import load_run_data
from hvx.training.run_bundle import write_run_bundle
from hvx.training.run_state import RunState
from hvx.training.sam import SAM
from hvx.training.sampling import EpochBatches, TrainTiles, one_cv2_thread
from hvx.training.validation import combine, evaluate

__all__ = ["TrainResult", "Trainer"]

log = logging.getLogger("hvx.training")


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


class Trainer(RunState):
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
        if max_minutes is not None and not max_minutes > 0:
            raise ValueError(f"expected max_minutes > 0, got {max_minutes}")
        self.preprocess_impl = preprocess_impl
        self.config = config
        self.out = Path(out)
        self.device = _pick_device(device)
        self.max_minutes = max_minutes
        self.resume = resume
        self.progress = progress
        run = load_run_data(config, data)
        self.parts, self.class_names, self.data_source = run.parts, run.class_names, run.source
        typed = [p for p in self.parts if p.typed]
        self.train_ds, self.val_ds = self.parts[0].train, (typed or self.parts)[0].val
        self._check_run(config, max_minutes)
        self.amp = config.amp and self.device.type == "cuda"
        if self.device.type == "cuda":
            # TF32 matrix products and convolutions, autotuned (training crops are one size)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        self.model, self.finetune_source = self._build_model(config, resume)
        self.loss_fn = HoVerLoss(config.loss)
        self._build_optimizer(config)
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

    def _check_run(self, config: TrainConfig, max_minutes: float | None) -> None:
        """Refuses a run that cannot start: too few tiles, budget_decay without a budget."""
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

    def _build_model(
        self, config: TrainConfig, resume: bool
    ) -> tuple[HoVerNet, FinetuneSource | None]:
        """The network, seeded by ``config.seed`` (or a fine-tuning parent), on the device."""
        torch.manual_seed(config.seed)
        model = create_model(
            config.model.variant,
            in_chans=config.in_chans,
            num_types=len(self.class_names) + 1,
            init_from=config.model.init_from,
        )
        source: FinetuneSource | None = None
        # a resumed run's weights come from its own checkpoint (which also records
        # the parent): the parent is not read again and need not exist any more
        if config.model.finetune_from and not resume:
            source = read_finetune_weights(config.model.finetune_from, model, config.model.variant)
            parent = set(source.get("val_sources") or ())
            mine = [set(p.val.sources) for p in self.parts]
            # the parent's dataset: the one holding its held-out images (else all)
            same = [v for v in mine if v & parent] or mine
            check_parent(source, set().union(*same), tuple(self.class_names))
        model.to(self.device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        m = model.size_multiple
        if config.data.crop_size % m:
            raise ValueError(
                f"expected data.crop_size a multiple of {m} for {config.model.variant}, "
                f"got {config.data.crop_size}"
            )
        return model, source

    def _build_optimizer(self, config: TrainConfig) -> None:
        """AdamW (wrapped in SAM when ``optim.sam``), its StepLR and the GradScaler."""
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

    # -- one step ------------------------------------------------------------------------

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimiser step (two forward/backward passes with SAM); returns the losses."""
        dev = self.device
        if self.config.model.freeze_bn:
            freeze_batchnorm(self.model)
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
        sampler = EpochBatches(
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
            worker_init_fn=one_cv2_thread,
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
        metrics = combine(per)
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
                if self._run_epoch(t_start, budget):
                    validated_at = self.global_step
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

    def _run_epoch(self, t_start: float, budget: float) -> bool:
        """The rest of the current epoch (until its end or a stop); True if it validated."""
        bar = tqdm(
            self._loader(self.epoch, self.step_in_epoch),
            total=self.steps_per_epoch,
            initial=self.step_in_epoch,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            disable=not self.progress,
            leave=False,
        )
        t_epoch = time.monotonic()
        losses, means = self._steps(bar, t_start, budget)
        bar.close()
        self.train_seconds += time.monotonic() - t_epoch
        if self.step_in_epoch < self.steps_per_epoch:
            return False
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
                **{f"mean_{k}": v for k, v in means.items()},
            }
        )
        cfg = self.config
        validate = self._stop is None and (
            self.epoch % cfg.val_every == 0 or self.epoch == cfg.epochs
        )
        if validate:
            self._validate()
        self.save()
        return validate

    def _steps(self, bar, t_start: float, budget: float) -> tuple[dict, dict]:
        """Optimiser steps over ``bar`` until it ends or a stop; (last losses, mean losses)."""
        losses: dict[str, float] = {}
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
            every = self.config.ckpt_every_steps
            if every and self.global_step % every == 0:
                self.save()
        return losses, {k: sums[k] / counts[k] for k in sums}

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
        return write_run_bundle(self)


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
