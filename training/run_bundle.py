"""The model bundle a training run ends with, and its provenance.

The bundle holds the weights of the best validation (``checkpoints/best``; the
last weights when no validation ran), rebalanced so that BatchNorm statistics
fit float16 (``hvx.model._net.rebalance_for_fp16``: the same function), with
the run's config, data (sources held out for validation), seed, parent
weights, progress and machine in ``provenance``, and the validation history in
``metrics``.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import TYPE_CHECKING

from hvx.bundle import save_bundle
from hvx.model import create_model
from hvx.model._net import rebalance_for_fp16
from hvx.provenance import provenance
from hvx.training.checkpoint import load_checkpoint
from hvx.training.prepare import part_record

if TYPE_CHECKING:
    from hvx.training.trainer import Trainer

__all__ = ["write_run_bundle"]


def _data_record(trainer: Trainer) -> dict:
    parts = trainer.parts
    multi = trainer.config.data.datasets is not None
    return {
        "source": trainer.data_source,
        "train_tiles": sum(len(p.train) for p in parts),
        "val_tiles": sum(len(p.val) for p in parts),
        "val_sources": sorted({s for p in parts for s in p.val.sources}),
        **({"datasets": [part_record(p) for p in parts]} if multi else {}),
    }


def write_run_bundle(trainer: Trainer) -> Path:
    """Writes ``out/bundle`` from the trainer's best (else last) weights; returns its path."""
    cfg = trainer.config
    best_path = trainer.ckpt_dir / "best.safetensors"
    model = create_model(
        cfg.model.variant, in_chans=cfg.in_chans, num_types=len(trainer.class_names) + 1
    )
    if trainer.best is not None and best_path.exists():
        model.load_state_dict(load_checkpoint(best_path).model)
        weights = "best"
    else:
        model.load_state_dict({k: v.cpu() for k, v in trainer.model.state_dict().items()})
        weights = "last"
    # same function, BatchNorm statistics inside float16's range (fp16 inference)
    rebalanced = rebalance_for_fp16(model.eval())
    prov = {
        "config": cfg.to_dict(),
        "data": _data_record(trainer),
        "seed": cfg.seed,
        "finetuned_from": trainer.finetune_source,
        "weights": weights,
        "fp16_rebalanced": rebalanced,
        "epochs_done": trainer.epoch,
        "global_step": trainer.global_step,
        "train_seconds": round(trainer.train_seconds, 1),
        "device": str(trainer.device),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": provenance(),
    }
    return save_bundle(
        trainer.out / "bundle",
        model,
        class_names=trainer.class_names,
        mpp=cfg.model_mpp,
        preprocess=cfg.preprocess,
        postprocess=cfg.postprocess,
        provenance=prov,
        metrics={"validation": trainer.best, "history": trainer.history},
    )
