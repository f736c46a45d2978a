"""Start a training run from a whole trained hvx network (``model.finetune_from``).

``init_from`` seeds only the encoder from an ImageNet-style timm checkpoint;
``finetune_from`` seeds every weight (encoder, HiRes stem, decoders, heads) from
an hvx model bundle folder or an ``hvx-train`` checkpoint file, so a run can
continue training a shipped model, on the same data with a new schedule or on a
lab's own annotations. The variant and the class count must match exactly: a
partial load would silently re-initialise heads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from hvx.bundle import load_bundle
from hvx.training.checkpoint import load_checkpoint

__all__ = ["FinetuneSource", "check_parent", "read_finetune_weights"]

_LOG = logging.getLogger("hvx.training")


class FinetuneSource(dict):
    """JSON-ready description of the weights a run started from (for provenance).

    Keys: ``path``, ``kind`` ("bundle" or "checkpoint"), ``variant``, and for a
    bundle the ``val_sources`` and ``class_names`` it recorded (None for a
    checkpoint, or when it recorded none).
    """


def _from_bundle(path: Path) -> tuple[dict[str, torch.Tensor], FinetuneSource]:

    bundle = load_bundle(path)
    state = bundle.build_model("cpu", torch.float32).state_dict()
    recorded = (bundle.provenance.get("data") or {}).get("val_sources")
    info = FinetuneSource(
        path=str(path),
        kind="bundle",
        variant=bundle.variant,
        val_sources=sorted(recorded) if recorded else None,
        class_names=list(bundle.class_names),
    )
    return state, info


def _from_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], FinetuneSource]:

    ckpt = load_checkpoint(path)
    variant = ((ckpt.state.get("config") or {}).get("model") or {}).get("variant")
    info = FinetuneSource(
        path=str(path), kind="checkpoint", variant=variant, val_sources=None, class_names=None
    )
    return dict(ckpt.model), info


def read_finetune_weights(path: str | Path, model: torch.nn.Module, variant: str) -> FinetuneSource:
    """Loads every weight of ``model`` from a bundle folder or a training checkpoint.

    Args:
        path: An hvx model bundle folder (``model.json`` + weights) or an
            ``hvx-train`` checkpoint (``checkpoints/best.safetensors``).
        model: The freshly built network, changed in place.
        variant: Its variant name, which the source's must equal.

    Returns:
        The :class:`FinetuneSource` (for the new bundle's provenance).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the source is of another variant, or its tensors do not fit
            ``model`` (other class count, input channels), or it is corrupted.
    """
    path = Path(path)
    if path.is_dir():
        state, info = _from_bundle(path)
    elif path.is_file():
        state, info = _from_checkpoint(path)
    else:
        raise FileNotFoundError(
            f"model.finetune_from: expected a model bundle folder or an hvx-train "
            f"checkpoint file, got {path} (does not exist)"
        )
    if info["variant"] != variant:
        raise ValueError(
            f"model.finetune_from {path}: expected a {variant!r} network (model.variant), "
            f"got {info['variant']!r}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"model.finetune_from {path}: its weights do not fit this {variant!r} network "
            f"(class count or input channels differ?): {e}"
        ) from None
    return info


def check_parent(info: FinetuneSource, val_sources: set[str], class_names: tuple[str, ...]) -> None:
    """Warns when the parent bundle's split or classes differ from this run's.

    A parent trained with a different split may have trained on this run's
    validation images, which would make this run's validation scores optimistic;
    a parent with other class names (same count) has heads that mean other
    classes at first (legitimate when re-purposing a model, a mistake otherwise).
    """
    names = info.get("class_names")
    if names is not None and list(names) != list(class_names):
        _LOG.warning(
            "model.finetune_from %s has classes %s, this run %s: its type head starts "
            "from the parent's classes in that order",
            info["path"],
            list(names),
            list(class_names),
        )
    parent = info.get("val_sources")
    if parent is not None and set(parent) != set(val_sources):
        _LOG.warning(
            "model.finetune_from %s held out %s, this run validates on %s: the parent may "
            "have trained on this run's validation images, so its scores can be optimistic",
            info["path"],
            sorted(parent),
            sorted(val_sources),
        )


def freeze_batchnorm(model: torch.nn.Module) -> int:
    """Puts every BatchNorm of ``model`` in inference mode (``model.freeze_bn``).

    Called before each training step, since validation switches the model back to
    training mode. Returns the number of BatchNorm layers.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
            n += 1
    return n
