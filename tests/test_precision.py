"""hvx.precision: the fp16 parity check and the precision Engine.load picks with it."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import hvx.precision as hp
from hvx.assets import default_model_path, sample_paths
from hvx.bundle import load_bundle
from hvx.io import read_image
from hvx.model import create_model
from hvx.postprocess import PostprocessConfig
from hvx.preprocess import PreprocessConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tile():
    return read_image(sample_paths()[0])[None]


def test_default_model_keeps_its_nuclei_in_fp16_and_an_unsafe_copy_does_not(tile):
    # The first default models had decoder BatchNorms with running variances ~3e5,
    # beyond float16's range: cast to fp16 they became inf and broke the maps. The
    # shipped weights are rebalanced (hvx.model._net.rebalance_for_fp16); undoing
    # that on one block (the same function in fp32) breaks fp16 again, which is
    # why Engine.load(precision="auto") checks before using fp16 on a GPU.
    b = load_bundle(default_model_path())
    check = hp.check_fp16(b.build_model(), b.preprocess, b.postprocess, images=tile)
    assert check.tiles == 1 and check.device == "cpu"
    assert check.ok, check
    unsafe = b.build_model().eval()
    with torch.no_grad():
        conv, bn = unsafe.decoder.branches.np.m2[0], unsafe.decoder.branches.np.m2[1]
        conv.weight.mul_(300.0)
        bn.running_mean.mul_(300.0)
        bn.running_var.mul_(300.0**2)
    check = hp.check_fp16(unsafe, b.preprocess, b.postprocess, images=tile)
    assert not check.ok and check.pq < hp.FP16_MIN_PQ
    assert check.max_abs["np"] > 0.1


def test_a_well_conditioned_model_passes_and_is_not_modified(tile):
    torch.manual_seed(0)
    model = create_model("fast_convnext_atto", in_chans=6, num_types=5).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check = hp.check_fp16(model, PreprocessConfig(), PostprocessConfig(), images=tile)
    assert check.ok and check.pq >= hp.FP16_MIN_PQ
    assert max(check.max_abs.values()) < 0.01
    for k, v in model.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((1, 64, 64, 3), np.float32),
        np.zeros((64, 64, 3), np.uint8),
        np.zeros((0, 64, 64, 3), np.uint8),
    ],
)
def test_bad_images(images):
    model = create_model("fast_convnext_atto", in_chans=6, num_types=5).eval()
    with pytest.raises(ValueError, match=r"images: expected uint8 \(N, H, W, 3\)"):
        hp.check_fp16(model, PreprocessConfig(), PostprocessConfig(), images=images)


@pytest.mark.parametrize(("pq", "want"), [(0.995, "fp16"), (0.85, "fp32")])
def test_auto_precision_on_cuda_follows_the_check(monkeypatch, caplog, pq, want):
    seen = {}

    def fake(model, pre, post, images=None, device="cpu"):
        seen["device"] = device
        return hp.Fp16Check(
            pq=pq, max_abs={"np": 0.5, "hv": 0.0, "tp": 0.9}, tiles=4, device=device
        )

    monkeypatch.setattr(hp, "check_fp16", fake)
    b = load_bundle(default_model_path())
    with caplog.at_level(logging.WARNING, logger="hvx.engine"):
        assert hp.auto_cuda_precision(b, "cuda:1", "bundle") == want
    assert seen["device"] == "cuda:1"
    warned = [r.getMessage() for r in caplog.records]
    if want == "fp32":
        assert len(warned) == 1 and "fp16 changes the results of bundle" in warned[0]
        assert "PQ 0.850" in warned[0] and "precision='fp16'" in warned[0]
    else:
        assert not warned


@pytest.mark.cuda
def test_engine_on_cuda_uses_the_precision_the_check_allows():
    from hvx.engine import Engine

    b = load_bundle(default_model_path())
    check = hp.check_fp16(b.build_model(), b.preprocess, b.postprocess, device="cuda")
    engine = Engine.load(default_model_path(), backend="torch", device="cuda")
    assert engine.precision == ("fp16" if check.ok else "fp32")
    forced = Engine.load(default_model_path(), backend="torch", device="cuda", precision="fp16")
    assert forced.precision == "fp16"
