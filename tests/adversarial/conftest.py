"""Fixtures of the adversarial suite (issue 23: real slides and careless hands)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tiling"))  # synth helpers


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A random-weight fast_convnext_atto bundle (seed 0, 2 classes, mpp 0.5)."""
    from hvx.bundle import save_bundle
    from hvx.model import create_model
    from hvx.postprocess import PostprocessConfig
    from hvx.preprocess import PreprocessConfig

    torch.manual_seed(0)
    model = create_model("fast_convnext_atto", in_chans=6, num_types=3)
    return save_bundle(
        tmp_path_factory.mktemp("b") / "tiny",
        model,
        class_names=("epithelial", "lymphocyte"),
        mpp=0.5,
        preprocess=PreprocessConfig(),
        postprocess=PostprocessConfig(),
    )
