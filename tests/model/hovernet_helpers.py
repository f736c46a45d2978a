"""Checkpoints in the published layouts, made by the tests (no download, no reference code)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from hvx.model import create_model


@functools.lru_cache(maxsize=4)
def official_state(mode: str, num_types: int | None, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with the official names (num_types None: no type branch).

    BatchNorm statistics and affine parameters are randomised so that a wrong
    mapping of any of them changes the outputs.
    """
    torch.manual_seed(seed)
    variant = f"hovernet_{mode}" + ("" if num_types else "_notype")
    model = create_model(variant, in_chans=3, num_types=num_types or 2)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
    return {k: v.clone() for k, v in model.state_dict().items()}


def write_official_tar(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """The official ``.tar`` layout: ``{"desc": state}`` saved from DataParallel (``module.``)."""
    torch.save({"desc": {f"module.{k}": v for k, v in state.items()}}, path)
    return path


def write_tiatoolbox_pth(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """TIAToolbox's ``.pth``: the state dict itself, official names, no prefix."""
    torch.save(dict(state), path)
    return path
