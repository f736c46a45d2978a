"""SAM on a quadratic whose perturbed step is known in closed form (SPEC §7d)."""

import numpy as np
import pytest
import torch

from hvx.training.sam import SAM, frozen_bn_stats

A1 = np.array([1.0, 3.0])
A2 = np.array([[2.0, 0.5]])
W1 = np.array([1.0, -2.0])
W2 = np.array([[0.5, 4.0]])


def _problem():
    w1 = torch.nn.Parameter(torch.tensor(W1))
    w2 = torch.nn.Parameter(torch.tensor(W2))
    a1, a2 = torch.tensor(A1), torch.tensor(A2)

    def loss_fn():  # L = 0.5 sum a w^2 over both parameters
        return 0.5 * ((a1 * w1**2).sum() + (a2 * w2**2).sum())

    return [w1, w2], loss_fn


def _perturbed_grad(rho):
    g1, g2 = A1 * W1, A2 * W2
    norm = np.sqrt((g1**2).sum() + (g2**2).sum())  # over ALL parameters
    return A1 * (W1 + rho * g1 / norm), A2 * (W2 + rho * g2 / norm)


def test_sam_sgd_step_matches_closed_form():
    params, loss_fn = _problem()
    sam = SAM(torch.optim.SGD(params, lr=0.1), rho=0.05)

    def closure():
        loss = loss_fn()
        loss.backward()
        return loss

    loss = sam.step(closure)
    assert loss.item() == pytest.approx(0.5 * ((A1 * W1**2).sum() + (A2 * W2**2).sum()))
    gp1, gp2 = _perturbed_grad(0.05)
    np.testing.assert_allclose(params[0].detach().numpy(), W1 - 0.1 * gp1, rtol=1e-12)
    np.testing.assert_allclose(params[1].detach().numpy(), W2 - 0.1 * gp2, rtol=1e-12)
    g1, g2 = A1 * W1, A2 * W2
    assert sam.last_grad_norm == pytest.approx(np.sqrt((g1**2).sum() + (g2**2).sum()))
    assert all(p.grad is None for p in params)


def test_sam_adamw_first_step_matches_closed_form():
    # AdamW's first step: w (1 - lr wd) - lr g' / (|g'| + eps) (bias corrections cancel)
    lr, wd, eps, rho = 1e-2, 0.1, 1e-8, 0.3
    params, loss_fn = _problem()
    sam = SAM(torch.optim.AdamW(params, lr=lr, weight_decay=wd, eps=eps), rho=rho)
    sam.step(lambda: (loss_fn()).backward() or loss_fn())
    gp1, gp2 = _perturbed_grad(rho)
    for p, w, gp in ((params[0], W1, gp1), (params[1], W2, gp2)):
        expect = w * (1 - lr * wd) - lr * gp / (np.abs(gp) + eps)
        np.testing.assert_allclose(p.detach().numpy(), expect, rtol=1e-12)


def test_first_and_second_step_separately():
    params, loss_fn = _problem()
    sam = SAM(torch.optim.SGD(params, lr=0.0), rho=0.05)
    loss_fn().backward()
    assert sam.first_step()
    g1, g2 = A1 * W1, A2 * W2
    norm = np.sqrt((g1**2).sum() + (g2**2).sum())
    np.testing.assert_allclose(params[0].detach().numpy(), W1 + 0.05 * g1 / norm, rtol=1e-12)
    loss_fn().backward()
    sam.second_step()  # lr 0: back exactly at w
    np.testing.assert_array_equal(params[0].detach().numpy(), W1)
    np.testing.assert_array_equal(params[1].detach().numpy(), W2)


def test_grad_scaler_unscales_before_the_norm():
    # same step with a GradScaler (scale 2^12) as without: e_w is in weight units
    params_ref, loss_ref = _problem()
    SAM(torch.optim.SGD(params_ref, lr=0.1), rho=0.05).step(
        lambda: loss_ref().backward() or loss_ref()
    )
    params, loss_fn = _problem()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    sam = SAM(torch.optim.SGD(params, lr=0.1), rho=0.05, scaler=scaler)

    def closure():
        loss = loss_fn()
        scaler.scale(loss).backward()
        return loss

    sam.step(closure)
    for p, q in zip(params, params_ref, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-12)
    assert sam.last_grad_norm == pytest.approx(
        np.sqrt(((A1 * W1) ** 2).sum() + ((A2 * W2) ** 2).sum())
    )


def test_non_finite_first_gradient_skips_the_step_and_backs_off():
    params, loss_fn = _problem()
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    sam = SAM(torch.optim.SGD(params, lr=0.1), rho=0.05, scaler=scaler)
    calls = []

    def closure():
        calls.append(1)
        loss = loss_fn() * float("inf")
        scaler.scale(loss).backward()
        return loss

    sam.step(closure)
    assert len(calls) == 1  # no second pass
    assert scaler.get_scale() == 4.0
    np.testing.assert_array_equal(params[0].detach().numpy(), W1)


def _bn_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1)
    )


def test_bn_running_stats_update_in_the_first_pass_only():
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    ref = _bn_model()
    ref(x)  # one training-mode forward at the initial weights
    model = _bn_model()
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5)

    def closure():
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    sam.step(closure, model=model)
    bn, bn_ref = model[1], ref[1]
    assert torch.equal(bn.running_mean, bn_ref.running_mean)
    assert torch.equal(bn.running_var, bn_ref.running_var)
    assert int(bn.num_batches_tracked) == 1
    assert bn.momentum == bn_ref.momentum


def test_frozen_bn_stats_restores_after_an_exception():
    model = _bn_model()
    before = model[1].running_mean.clone()
    with pytest.raises(RuntimeError, match="boom"), frozen_bn_stats(model):
        model(torch.randn(4, 3))
        raise RuntimeError("boom")
    assert torch.equal(model[1].running_mean, before)
    assert model[1].momentum == 0.1


def test_bad_arguments():
    params, _ = _problem()
    with pytest.raises(ValueError, match=r"expected rho > 0, got 0"):
        SAM(torch.optim.SGD(params, lr=0.1), rho=0)
    with pytest.raises(TypeError, match=r"expected a torch.optim.Optimizer, got list"):
        SAM(params)
