"""A tiny three-head network for backend tests that must not depend on hvx.model.

It has the I/O contract of ``hvx.model.HoVerNetInference`` (softmax inside), so
export, ONNX Runtime parity and cache-key tests run even without the model code;
the real model is covered in tests/test_engine.py through a bundle.
"""

import pytest
import torch
from torch import nn


class ThreeHeads(nn.Module):
    def __init__(self, in_chans: int = 6, num_types: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_chans, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 8, 3, padding=1)
        )
        self.np_head = nn.Conv2d(8, 2, 1)
        self.hv_head = nn.Conv2d(8, 2, 1)
        self.tp_head = nn.Conv2d(8, num_types, 1)

    def forward(self, x):
        f = self.body(x)
        return (
            self.np_head(f).softmax(1)[:, 1],
            torch.tanh(self.hv_head(f)),
            self.tp_head(f).softmax(1),
        )


def _make(seed: int = 0, in_chans: int = 6, num_types: int = 4) -> ThreeHeads:
    torch.manual_seed(seed)
    return ThreeHeads(in_chans, num_types).eval()


@pytest.fixture
def make_three_heads():
    return _make


@pytest.fixture
def three_heads():
    return _make(0)
