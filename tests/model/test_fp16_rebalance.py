"""float16 safety of conv -> BatchNorm blocks: detection and the exact rebalancing fix."""

import copy

import pytest
import torch

from hvx.model import HoVerNetInference, create_model
from hvx.model._net import FP16_MAX, fp16_unsafe_batchnorms, rebalance_for_fp16


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = create_model("fast_hr_convnext_atto", in_chans=3, num_types=3).eval()
    # realistic (non-default) BN statistics: run a few batches in train mode
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(torch.rand(2, 3, 64, 64))
        model.eval()
    return model


def _unsafe_copy(model, factor=600.0):
    """The same function with a decoder conv scaled up and its BN stats to match.

    That is what training produced in the first default models: a conv -> BN pair
    whose running variance exceeds float16's range (~factor**2 times the original).
    """
    bad = copy.deepcopy(model)
    with torch.no_grad():
        conv, bn = bad.decoder.branches.np.m2[0], bad.decoder.branches.np.m2[1]
        conv.weight.mul_(factor)
        bn.running_mean.mul_(factor)
        bn.running_var.mul_(factor**2)
        bn.eps = bn.eps * factor**2  # keep the function exactly
    return bad


def _outputs(model, x, dtype):
    """The network's heads and, first, the output of the np branch's m2 block."""
    m = copy.deepcopy(model).to(dtype)
    got = []
    hook = m.decoder.branches.np.m2.register_forward_hook(lambda mod, i, o: got.append(o))
    with torch.no_grad():
        heads = [t.float() for t in HoVerNetInference(m)(x.to(dtype))]
    hook.remove()
    return [got[0].float(), *heads]


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_unsafe_block_is_detected_and_breaks_fp16(small_model):
    x = torch.rand(1, 3, 64, 64)
    bad = _unsafe_copy(small_model)
    assert fp16_unsafe_batchnorms(small_model) == []
    assert fp16_unsafe_batchnorms(bad) == ["decoder.branches.np.m2.1"]
    assert bad.decoder.branches.np.m2[1].running_var.max() > FP16_MAX
    ref = _outputs(small_model, x, torch.float32)
    same = _outputs(bad, x, torch.float32)
    assert _rel(same[0], ref[0]) < 1e-4  # the same function in fp32
    assert _rel(_outputs(small_model, x, torch.float16)[0], ref[0]) < 0.02
    assert _rel(_outputs(bad, x, torch.float16)[0], ref[0]) > 0.5  # but not in fp16


def test_rebalance_keeps_the_function_and_makes_fp16_work(small_model):
    x = torch.rand(1, 3, 64, 64)
    bad = _unsafe_copy(small_model)
    bad.decoder.branches.np.m2[1].eps = small_model.decoder.branches.np.m2[1].eps
    ref = _outputs(bad, x, torch.float32)
    changed = rebalance_for_fp16(bad)
    assert "decoder.branches.np.m2.1" in changed
    assert fp16_unsafe_batchnorms(bad) == []
    assert bad.decoder.branches.np.m2[1].running_var.max() <= 1024.0 * (1 + 1e-6)
    after = _outputs(bad, x, torch.float32)
    for a, b in zip(ref, after, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    half = _outputs(bad, x, torch.float16)
    assert _rel(half[0], after[0]) < 0.02
    assert (half[1] - after[1]).abs().max() < 0.01  # foreground probability
    assert rebalance_for_fp16(bad) == []  # idempotent


def test_non_finite_statistics_are_unsafe(small_model):
    m = copy.deepcopy(small_model)
    with torch.no_grad():
        m.hires.halfres[1].running_var[0] = float("inf")
    assert fp16_unsafe_batchnorms(m) == ["hires.halfres.1"]
