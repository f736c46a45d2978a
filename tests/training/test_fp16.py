"""python -m hvx.training.fp16: a float16-safe copy of a bundle, the same function."""

import numpy as np
import pytest
import torch

from hvx.bundle import load_bundle, save_bundle
from hvx.model import HoVerNetInference, create_model
from hvx.model._net import fp16_unsafe_batchnorms
from hvx.postprocess import PostprocessConfig
from hvx.preprocess import PreprocessConfig
from hvx.training.fp16 import main, rebalance_bundle


def _unsafe_bundle(path):
    torch.manual_seed(0)
    model = create_model("fast_convnext_atto", in_chans=6, num_types=3).eval()
    with torch.no_grad():
        conv, bn = model.decoder.branches.hv.m2[0], model.decoder.branches.hv.m2[1]
        conv.weight.mul_(500.0)
        bn.running_mean.mul_(500.0)
        bn.running_var.mul_(500.0**2)
    return save_bundle(
        path,
        model,
        class_names=("a", "b"),
        mpp=0.25,
        preprocess=PreprocessConfig(),
        postprocess=PostprocessConfig(),
        provenance={"data": {"val_sources": ["x"]}},
    )


def test_rebalanced_copy_is_safe_and_the_same_function(tmp_path):
    src = _unsafe_bundle(tmp_path / "src")
    before = load_bundle(src).build_model("cpu").eval()
    assert fp16_unsafe_batchnorms(before) == ["decoder.branches.hv.m2.1"]
    assert rebalance_bundle(src, tmp_path / "dst") == ["decoder.branches.hv.m2.1"]
    dst = load_bundle(tmp_path / "dst")
    after = dst.build_model("cpu").eval()
    assert fp16_unsafe_batchnorms(after) == []
    assert dst.provenance["fp16_rebalanced"] == ["decoder.branches.hv.m2.1"]
    assert dst.provenance["data"] == {"val_sources": ["x"]}
    x = torch.rand(1, 6, 64, 64)
    with torch.no_grad():
        a, b = HoVerNetInference(before)(x), HoVerNetInference(after)(x)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u.numpy(), v.numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="expected a new folder"):
        rebalance_bundle(src, tmp_path / "dst")
    assert main([str(src), str(tmp_path / "dst")]) == 2
