"""Losses against values computed by hand (numpy loops written from SPEC §4c, §7c)."""

import math

import numpy as np
import pytest
import torch

from hvx.training.losses import (
    HoVerLoss,
    LossWeights,
    dice_loss,
    mse_loss,
    msge_loss,
    one_hot,
    sobel_kernels,
    unified_focal_loss,
    xentropy_loss,
)

EPS = 1e-7


# ---- numpy references, NHWC like the reference code, plain loops -------------------


def np_softmax(logits_nhwc):
    e = np.exp(logits_nhwc - logits_nhwc.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_xentropy(p, t):
    p = p / p.sum(-1, keepdims=True)
    p = np.clip(p, EPS, 1 - EPS)
    return float(np.mean(-(t * np.log(p)).sum(-1)))


def np_dice(p, t, smooth=1e-3):
    total = 0.0
    for c in range(p.shape[-1]):
        inse = (p[..., c] * t[..., c]).sum()
        total += 1 - (2 * inse + smooth) / (p[..., c].sum() + t[..., c].sum() + smooth)
    return total


def np_ufl(p, y, w=0.5, d=0.6, g=0.5):
    p = np.clip(p, EPS, 1 - EPS)
    n_pix = p.shape[0] * p.shape[1] * p.shape[2]
    focal = 0.0
    for idx in np.ndindex(p.shape[:-1]):
        pp, yy = p[idx], y[idx]
        focal += (1 - d) * (1 - pp[0]) ** g * (-yy[0] * math.log(pp[0]))
        focal += d * sum(-yy[c] * math.log(pp[c]) for c in range(1, p.shape[-1]))
    focal /= n_pix
    terms = []
    for c in range(p.shape[-1]):
        tp = (y[..., c] * p[..., c]).sum()
        fn = (y[..., c] * (1 - p[..., c])).sum()
        fp = ((1 - y[..., c]) * p[..., c]).sum()
        ti = (tp + EPS) / (tp + d * fn + (1 - d) * fp + EPS)
        terms.append(1 - ti if c == 0 else (1 - ti) ** (1 - g))
    return w * float(np.mean(terms)) + (1 - w) * focal


def np_msge(pred, true, focus, orientation="ij"):
    """pred/true NCHW (N,2,H,W); focus (N,H,W). Kernel from the SPEC formula, 'ij' meshgrid."""
    a, b = np.meshgrid(np.arange(-2, 3), np.arange(-2, 3), indexing="ij")
    den = a * a + b * b + 1e-15
    ka, kb = a / den, b / den
    kernels = (ka, kb) if orientation == "ij" else (kb, ka)
    n, _, h, w = pred.shape
    num = 0.0
    for ch in range(2):
        k = kernels[ch]
        for i in range(n):
            for y in range(h):
                for x in range(w):
                    gp = gt = 0.0
                    for dy in range(-2, 3):
                        for dx in range(-2, 3):
                            yy, xx = y + dy, x + dx
                            if 0 <= yy < h and 0 <= xx < w:
                                gp += k[dy + 2, dx + 2] * pred[i, ch, yy, xx]
                                gt += k[dy + 2, dx + 2] * true[i, ch, yy, xx]
                    num += focus[i, y, x] * (gp - gt) ** 2
    return num / (2 * focus.sum() + 1e-8)


@pytest.fixture
def case():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)  # N, C, H, W
    labels = rng.integers(0, 3, size=(2, 4, 5))
    labels[0, 0, 0] = 2  # every class present
    prob_nchw = torch.softmax(torch.from_numpy(logits), 1)
    t_nchw = one_hot(torch.from_numpy(labels), 3)
    p_nhwc = prob_nchw.permute(0, 2, 3, 1).double().numpy()
    t_nhwc = np.eye(3)[labels]
    return prob_nchw, t_nchw, p_nhwc, t_nhwc


# ---- a case small enough to do with pencil and paper -------------------------------


def test_two_pixel_case_by_hand():
    # one image, 1x2 pixels, 2 classes. pixel 0: p = (0.8, 0.2), label 0;
    # pixel 1: p = (0.4, 0.6), label 1.
    p = torch.tensor([[[[0.8, 0.4]], [[0.2, 0.6]]]])
    t = one_hot(torch.tensor([[[0, 1]]]), 2)
    # xentropy = (-ln 0.8 - ln 0.6) / 2
    assert xentropy_loss(p, t).item() == pytest.approx((-math.log(0.8) - math.log(0.6)) / 2)
    # dice: c0: inse 0.8, sum p 1.2, sum t 1 -> 1 - 1.601/2.201
    #       c1: inse 0.6, sum p 0.8, sum t 1 -> 1 - 1.201/1.801
    expect = (1 - 1.601 / 2.201) + (1 - 1.201 / 1.801)
    assert dice_loss(p, t).item() == pytest.approx(expect, rel=1e-6)
    # UFL (w .5, d .6, g .5): focal = [0.4 * sqrt(0.2) * -ln 0.8 + 0.6 * -ln 0.6] / 2
    focal = (0.4 * math.sqrt(0.2) * -math.log(0.8) + 0.6 * -math.log(0.6)) / 2
    # TI_0: tp .8, fn .2, fp .4 -> .8 / (.8 + .12 + .16);  TI_1: tp .6, fn .4, fp .2
    ti0 = (0.8 + EPS) / (0.8 + 0.6 * 0.2 + 0.4 * 0.4 + EPS)
    ti1 = (0.6 + EPS) / (0.6 + 0.6 * 0.4 + 0.4 * 0.2 + EPS)
    tversky = ((1 - ti0) + (1 - ti1) ** 0.5) / 2
    assert unified_focal_loss(p, t).item() == pytest.approx(0.5 * tversky + 0.5 * focal, rel=1e-6)


def test_xentropy_dice_ufl_match_numpy(case):
    prob, t, p_np, t_np = case
    assert xentropy_loss(prob, t).item() == pytest.approx(np_xentropy(p_np, t_np), rel=1e-5)
    assert dice_loss(prob, t).item() == pytest.approx(np_dice(p_np, t_np), rel=1e-5)
    assert unified_focal_loss(prob, t).item() == pytest.approx(np_ufl(p_np, t_np), rel=1e-5)
    got = unified_focal_loss(prob, t, weight=0.3, delta=0.7, gamma=0.2).item()
    assert got == pytest.approx(np_ufl(p_np, t_np, 0.3, 0.7, 0.2), rel=1e-5)


def test_xentropy_renormalises_and_clamps():
    # an unnormalised row is divided by its sum; a zero probability is clamped to 1e-7
    p = torch.tensor([[[[2.0]], [[2.0]]]])  # (1, 2, 1, 1), sums to 4 -> 0.5/0.5
    t = one_hot(torch.tensor([[[1]]]), 2)
    assert xentropy_loss(p, t).item() == pytest.approx(math.log(2))
    p0 = torch.tensor([[[[1.0]], [[0.0]]]])
    assert xentropy_loss(p0, t).item() == pytest.approx(-math.log(1e-7), rel=1e-5)


def test_ufl_endpoints():
    # w = 1 -> pure focal Tversky; w = 0 -> pure asymmetric focal CE
    prob = torch.tensor([[[[0.9, 0.3]], [[0.1, 0.7]]]])
    t = one_hot(torch.tensor([[[0, 1]]]), 2)
    p_np = prob.permute(0, 2, 3, 1).double().numpy()
    t_np = t.permute(0, 2, 3, 1).double().numpy()
    for w in (0.0, 1.0):
        assert unified_focal_loss(prob, t, weight=w).item() == pytest.approx(
            np_ufl(p_np, t_np, w=w), rel=1e-6
        )


def test_ufl_perfect_prediction_has_finite_gradient():
    logits = torch.tensor([[[[30.0, -30.0]], [[-30.0, 30.0]]]], requires_grad=True)
    t = one_hot(torch.tensor([[[0, 1]]]), 2)
    loss = unified_focal_loss(torch.softmax(logits, 1), t)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert loss.item() < 1e-3


def test_mse():
    a = torch.tensor([[[[1.0, 2.0]], [[0.0, -1.0]]]])
    b = torch.zeros_like(a)
    assert mse_loss(a, b).item() == pytest.approx((1 + 4 + 0 + 1) / 4)


def test_sobel_kernel_values():
    kh, kv = sobel_kernels("ij")
    # 'ij': kh[i, j] = (i-2) / ((i-2)^2 + (j-2)^2): row offset over squared distance
    assert kh[0, 2].item() == pytest.approx(-2 / 4)
    assert kh[4, 3].item() == pytest.approx(2 / 5)
    assert kh[2, 0].item() == 0.0
    assert kv[2, 0].item() == pytest.approx(-2 / 4)
    assert kh[2, 2].item() == 0.0
    kh_xy, kv_xy = sobel_kernels("xy")
    assert torch.equal(kh_xy, kv) and torch.equal(kv_xy, kh)


@pytest.mark.parametrize("orientation", ["ij", "xy"])
def test_msge_matches_numpy_loops(orientation):
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(2, 2, 6, 7)).astype(np.float32)
    true = rng.normal(size=(2, 2, 6, 7)).astype(np.float32)
    focus = (rng.random((2, 6, 7)) > 0.5).astype(np.int64)
    got = msge_loss(
        torch.from_numpy(pred), torch.from_numpy(true), torch.from_numpy(focus), orientation
    ).item()
    assert got == pytest.approx(np_msge(pred, true, focus, orientation), rel=1e-5)


def test_msge_quirk_ij_differentiates_h_along_rows():
    # an h-map that is a ramp along x (columns) and constant along y: in the interior
    # its gradient along rows is 0, so 'ij' (PyTorch port) sees no error, 'xy' does.
    x = torch.arange(9, dtype=torch.float32)
    pred = torch.zeros(1, 2, 9, 9)
    pred[0, 0] = x[None, :].expand(9, 9)
    true = torch.zeros_like(pred)
    focus = torch.zeros(1, 9, 9, dtype=torch.long)
    focus[0, 2:7, 2:7] = 1  # interior: the zero padding never reaches it
    assert msge_loss(pred, true, focus, "ij").item() == pytest.approx(0.0, abs=1e-10)
    assert msge_loss(pred, true, focus, "xy").item() > 1.0


def test_msge_empty_focus_is_zero():
    pred = torch.randn(1, 2, 5, 5)
    assert msge_loss(pred, torch.zeros_like(pred), torch.zeros(1, 5, 5)).item() == 0.0


def test_hover_loss_combines_weighted_terms(case):
    rng = np.random.default_rng(1)
    out = {
        "np": torch.from_numpy(rng.normal(size=(2, 2, 6, 6)).astype(np.float32)),
        "hv": torch.from_numpy(rng.normal(size=(2, 2, 6, 6)).astype(np.float32)),
        "tp": torch.from_numpy(rng.normal(size=(2, 4, 6, 6)).astype(np.float32)),
    }
    tp = torch.from_numpy(rng.integers(0, 4, size=(2, 6, 6)))
    tgt = {
        "np": (tp > 0).long(),
        "hv": torch.from_numpy(rng.uniform(-1, 1, size=(2, 2, 6, 6)).astype(np.float32)),
        "tp": tp,
    }
    w = LossWeights(np_ce=0.5, np_ufl=2.0, np_dice=1.0, tp_ce=0, tp_ufl=1, tp_dice=3, hv_mse=2)
    total, parts = HoVerLoss(w)(out, tgt)
    assert set(parts) == {"np_ce", "np_ufl", "np_dice", "tp_ufl", "tp_dice", "hv_mse", "hv_msge"}
    p_np = torch.softmax(out["np"], 1)
    p_tp = torch.softmax(out["tp"], 1)
    oh_np, oh_tp = one_hot(tgt["np"], 2), one_hot(tp, 4)
    expect = (
        0.5 * xentropy_loss(p_np, oh_np)
        + 2 * unified_focal_loss(p_np, oh_np)
        + dice_loss(p_np, oh_np)
        + unified_focal_loss(p_tp, oh_tp)
        + 3 * dice_loss(p_tp, oh_tp)
        + 2 * mse_loss(out["hv"], tgt["hv"])
        + msge_loss(out["hv"], tgt["hv"], tgt["np"])
    )
    assert total.item() == pytest.approx(expect.item(), rel=1e-6)


def test_hover_loss_gradients_flow_fp16_logits():
    out = {
        k: torch.randn(1, c, 8, 8, dtype=torch.float16, requires_grad=True)
        for k, c in (("np", 2), ("hv", 2), ("tp", 3))
    }
    tgt = {
        "np": torch.ones(1, 8, 8, dtype=torch.long),
        "hv": torch.zeros(1, 2, 8, 8),
        "tp": torch.full((1, 8, 8), 2, dtype=torch.long),
    }
    total, _ = HoVerLoss()(out, tgt)
    assert total.dtype == torch.float32
    total.backward()
    assert all(torch.isfinite(t.grad).all() for t in out.values())


def test_bad_inputs_raise():
    p = torch.rand(1, 2, 3, 3)
    with pytest.raises(ValueError, match=r"expected a one-hot target of shape"):
        dice_loss(p, torch.rand(1, 3, 3, 3))
    with pytest.raises(ValueError, match=r"expected probabilities \(N, C, H, W\)"):
        xentropy_loss(p[0], p[0])
    with pytest.raises(ValueError, match=r"expected labels in \[0, 2\), got range"):
        one_hot(torch.tensor([[[0, 2]]]), 2)
    with pytest.raises(ValueError, match=r"expected delta in \[0, 1\], got 1.5"):
        unified_focal_loss(p, p, delta=1.5)
    with pytest.raises(ValueError, match=r"expected orientation 'ij' or 'xy', got 'yx'"):
        sobel_kernels("yx")
    with pytest.raises(ValueError, match=r"expected loss.np_dice a number >= 0, got -1"):
        LossWeights(np_dice=-1)
    with pytest.raises(ValueError, match=r"expected at least one loss weight > 0"):
        HoVerLoss(LossWeights(np_ufl=0, np_dice=0, tp_ufl=0, tp_dice=0, hv_mse=0, hv_msge=0))(
            {"np": p, "hv": p, "tp": p},
            {
                "np": torch.zeros(1, 3, 3, dtype=torch.long),
                "hv": p,
                "tp": torch.zeros(1, 3, 3, dtype=torch.long),
            },
        )


def _masked_case(seed=3):
    rng = np.random.default_rng(seed)
    out = {
        "np": torch.from_numpy(rng.normal(size=(3, 2, 6, 6)).astype(np.float32)),
        "hv": torch.from_numpy(rng.normal(size=(3, 2, 6, 6)).astype(np.float32)),
        "tp": torch.from_numpy(rng.normal(size=(3, 4, 6, 6)).astype(np.float32)),
    }
    tp = torch.from_numpy(rng.integers(0, 4, size=(3, 6, 6)))
    tgt = {
        "np": (tp > 0).long(),
        "hv": torch.from_numpy(rng.uniform(-1, 1, size=(3, 2, 6, 6)).astype(np.float32)),
        "tp": tp,
    }
    return out, tgt


def test_tp_valid_masks_untyped_samples_out_of_the_type_losses():
    out, tgt = _masked_case()
    w = LossWeights(np_ce=1, np_ufl=0, np_dice=1, tp_ce=1, tp_ufl=1, tp_dice=1)
    valid = torch.tensor([True, False, True])
    total, parts = HoVerLoss(w)(out, {**tgt, "tp_valid": valid})
    # the tp terms are those of the typed samples alone ...
    p_tp = torch.softmax(out["tp"][valid], 1)
    oh = one_hot(tgt["tp"][valid], 4)
    assert parts["tp_ce"].item() == pytest.approx(xentropy_loss(p_tp, oh).item(), rel=1e-6)
    assert parts["tp_dice"].item() == pytest.approx(dice_loss(p_tp, oh).item(), rel=1e-6)
    # ... np and hv still use every sample
    full_total, full_parts = HoVerLoss(w)(out, tgt)
    assert parts["np_ce"] == full_parts["np_ce"] and parts["hv_mse"] == full_parts["hv_mse"]
    assert total.item() != pytest.approx(full_total.item())
    # the untyped sample's type labels (e.g. all background) change nothing
    other = tgt["tp"].clone()
    other[1] = 0
    again, _ = HoVerLoss(w)(out, {**tgt, "tp": other, "tp_valid": valid})
    assert again.item() == pytest.approx(total.item(), rel=1e-7)
    # and its tp logits get no gradient
    logits = out["tp"].clone().requires_grad_(True)
    HoVerLoss(w)({**out, "tp": logits}, {**tgt, "tp_valid": valid})[0].backward()
    assert logits.grad[1].abs().max() == 0 and logits.grad[0].abs().max() > 0


def test_tp_valid_all_false_and_all_true():
    out, tgt = _masked_case()
    w = LossWeights()
    none, parts = HoVerLoss(w)(out, {**tgt, "tp_valid": torch.zeros(3, dtype=torch.bool)})
    assert not any(k.startswith("tp_") for k in parts)
    no_tp = LossWeights(tp_ce=0, tp_ufl=0, tp_dice=0)
    assert none.item() == pytest.approx(HoVerLoss(no_tp)(out, tgt)[0].item(), rel=1e-7)
    every, _ = HoVerLoss(w)(out, {**tgt, "tp_valid": torch.ones(3, dtype=torch.bool)})
    assert every.item() == HoVerLoss(w)(out, tgt)[0].item()
    with pytest.raises(ValueError, match=r"tp_valid: expected a bool tensor of shape \(3,\)"):
        HoVerLoss(w)(out, {**tgt, "tp_valid": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="tp_valid: expected a bool tensor"):
        HoVerLoss(w)(out, {**tgt, "tp_valid": torch.ones(3)})
