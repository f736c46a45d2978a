"""Validation during training: the model in training scored as users will run it.

:func:`evaluate` builds ``hvx.Engine.from_model`` around the network being
trained, so checkpoints are chosen through the inference path the model card
is scored with (``hvx-train --evaluate``, ``Engine.load``): the same
preprocessing, padding (reflect, or replicate where the pad exceeds the tile),
cropping and post-processing. Mixed precision (CUDA autocast) and the
preprocessing implementation follow the training run's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hvx.engine import Engine
from hvx.metrics import conic_scores, pq_stats
from hvx.training.config import TrainConfig
from hvx.training.data import TileDataset

__all__ = ["combine", "evaluate", "validation_engine"]


def validation_engine(
    model: torch.nn.Module,
    config: TrainConfig,
    device: torch.device | str,
    *,
    amp: bool = False,
    amp_dtype: str = "float16",
    preprocess_impl: str = "auto",
) -> Engine:
    """The Engine validation runs: the model as it is, the run's pre/post-processing.

    Args:
        model: The network (on ``device``; not moved, not cast).
        config: Supplies preprocessing, post-processing and the model's mpp.
        device: Where the model runs; autocast applies on CUDA only.
        amp: Autocast (CUDA).
        amp_dtype: Its dtype, "float16" or "bfloat16".
        preprocess_impl: ``hvx.preprocess.preprocess``'s ``impl``.
    """
    on_cuda = torch.device(device).type == "cuda"
    return Engine.from_model(
        model,
        config.preprocess,
        config.postprocess,
        mpp=config.model_mpp,
        amp=amp_dtype if amp and on_cuda else None,
        preprocess_impl=preprocess_impl,
        source="validation",
    )


def evaluate(
    model: torch.nn.Module,
    ds: TileDataset,
    config: TrainConfig,
    device: torch.device | str,
    *,
    amp: bool = False,
    amp_dtype: str = "float16",
    preprocess_impl: str = "auto",
) -> dict[str, Any]:
    """Validation: whole tiles -> ``Engine.from_model(model).infer`` -> CoNiC metrics.

    Args:
        model: The network (in eval mode during each batch, its mode restored).
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
    engine = validation_engine(
        model, config, device, amp=amp, amp_dtype=amp_dtype, preprocess_impl=preprocess_impl
    )
    bs = max(1, config.val_batch_size * 256 * 256 // int(np.prod(ds.inst.shape[1:])))
    preds = [engine.infer(ds.images[s : s + bs]).to_conic() for s in range(0, len(ds.images), bs)]
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
    scores = conic_scores(true, pred, num_classes=len(ds.class_names))
    return {
        "pq": float(scores.pq),
        "mpq_plus": float(scores.mpq_plus),
        "pq_plus": [float(v) for v in np.asarray(scores.pq_plus).ravel()],
        "tiles": len(ds.images),
    }


def combine(per: dict[str, dict]) -> dict[str, Any]:
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
