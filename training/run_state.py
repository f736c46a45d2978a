"""What a checkpoint saves and restores of a training run (``--resume``).

:class:`RunState` is the part of :class:`hvx.training.trainer.Trainer` that
writes ``checkpoints/last.safetensors`` (weights, optimizer, scheduler,
GradScaler, the torch RNG states, the position in the run, the validation
history and the config) and restores it, refusing a checkpoint whose config
differs in anything but :data:`RESUMABLE_CHANGES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hvx.training.checkpoint import load_checkpoint, save_checkpoint
from hvx.training.finetune import FinetuneSource

__all__ = ["RESUMABLE_CHANGES", "RunState", "check_resumable"]

#: Config fields that may differ between a checkpoint and a ``--resume`` run.
RESUMABLE_CHANGES = (
    "epochs",
    "num_workers",
    "val_every",
    "ckpt_every_steps",
    "val_batch_size",
    "channels_last",  # memory layout only (a resumed run then differs by float rounding)
)


def check_resumable(saved: dict, mine: dict, path: Path) -> None:
    """Refuses a resume whose config differs from the checkpoint's in a fixed field.

    Raises:
        ValueError: Naming the differing fields and those that may change.
    """
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


class RunState:
    """Checkpoint writing and restoring, mixed into the Trainer.

    It uses the Trainer's ``out``, ``config``, ``device``, ``model``, ``optimizer``,
    ``scheduler``, ``scaler``, ``finetune_source`` and run counters.
    """

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
        check_resumable(ckpt.state.get("config", {}), self.config.to_dict(), path)
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
