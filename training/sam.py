"""Sharpness-Aware Minimization around a base optimiser (SPEC §7d; Foret et al., ICLR 2021).

One SAM step, for weights w and a mini-batch:

1. forward/backward at w -> g (BatchNorm running statistics update here);
2. ``e_w = rho * g / ||g||_2`` with the norm over *all* parameters that have a
   gradient; move to ``w + e_w``;
3. forward/backward at ``w + e_w`` -> g' (BatchNorm running statistics frozen:
   :func:`frozen_bn_stats`);
4. restore w and let the base optimiser (AdamW) step with g'.

With mixed precision a ``torch.amp.GradScaler`` scales both backward passes;
the first gradient is unscaled before the norm (so ``e_w`` is in weight units),
and a non-finite first gradient skips the whole step and backs the scale off,
as the scaler would. :meth:`SAM.step` runs all four parts given a closure;
:meth:`SAM.first_step` / :meth:`SAM.second_step` expose them separately.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

__all__ = ["SAM", "frozen_bn_stats"]

_BN_TYPES = (torch.nn.modules.batchnorm._BatchNorm,)


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    """float32 for half-precision gradients, the gradient's own dtype otherwise."""
    return torch.promote_types(t.dtype, torch.float32)


@contextlib.contextmanager
def frozen_bn_stats(model: torch.nn.Module) -> Iterator[None]:
    """Leaves BatchNorm running statistics untouched by the forwards inside the block.

    Normalisation still uses the batch statistics (training mode); only the
    buffers ``running_mean``, ``running_var`` and ``num_batches_tracked`` are
    restored bit-for-bit on exit (and ``momentum`` is 0 inside, so no update is
    even computed into them).

    Args:
        model: Any module; its ``_BatchNorm`` submodules are frozen.
    """
    saved = []
    for m in model.modules():
        if isinstance(m, _BN_TYPES) and m.track_running_stats and m.running_mean is not None:
            saved.append(
                (
                    m,
                    m.momentum,
                    m.running_mean.clone(),
                    m.running_var.clone(),
                    m.num_batches_tracked.clone(),
                )
            )
            m.momentum = 0.0
    try:
        yield
    finally:
        with torch.no_grad():
            for m, momentum, mean, var, count in saved:
                m.momentum = momentum
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


class SAM:
    """SAM wrapping a base optimiser (AdamW in hvx).

    Args:
        base_optimizer: The optimiser that takes the actual step; SAM perturbs
            the parameters of its param groups.
        rho: Neighbourhood radius, > 0 (0.05 in the paper).
        scaler: Optional ``torch.amp.GradScaler`` used for both backward passes.

    Attributes:
        base_optimizer: The wrapped optimiser (its ``state_dict`` is the state to save).
        rho: The radius.
        last_grad_norm: ``||g||_2`` of the latest first step (unscaled), or None.
    """

    def __init__(
        self,
        base_optimizer: torch.optim.Optimizer,
        rho: float = 0.05,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"expected a torch.optim.Optimizer, got {type(base_optimizer).__name__}"
            )
        if not rho > 0:
            raise ValueError(f"expected rho > 0, got {rho}")
        self.base_optimizer = base_optimizer
        self.rho = float(rho)
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.last_grad_norm: float | None = None
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def param_groups(self) -> list[dict]:
        """The base optimiser's param groups (what LR schedulers modify)."""
        return self.base_optimizer.param_groups

    def _params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.param_groups for p in g["params"] if p.grad is not None]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zeroes the gradients of the base optimiser's parameters."""
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def first_step(self) -> bool:
        """Moves every parameter to ``w + e_w`` and zeroes the gradients.

        Returns:
            False (parameters untouched, gradients zeroed) when the first gradient
            is not finite: the caller must skip the second pass; with a scaler
            the scale has been backed off already.
        """
        params = self._params()
        inv_scale = 1.0 / self.scaler.get_scale() if self.scaler is not None else 1.0
        if not params:
            self.last_grad_norm = 0.0
            self._saved = []
            self.zero_grad()
            return True
        norms = [
            torch.linalg.vector_norm(p.grad, dtype=_acc_dtype(p.grad)).double() for p in params
        ]
        norm = torch.linalg.vector_norm(torch.stack(norms)) * inv_scale
        self.last_grad_norm = float(norm)
        if not torch.isfinite(norm):
            self._saved = []
            self.zero_grad()
            if self.scaler is not None:
                self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())
            return False
        scale = self.rho / (norm + 1e-12) * inv_scale
        self._saved = []
        for p in params:
            e_w = (p.grad.to(_acc_dtype(p.grad)) * scale.to(_acc_dtype(p.grad))).to(p.dtype)
            self._saved.append((p, p.detach().clone()))  # restored by copy: bit-exact
            p.add_(e_w)
        self.zero_grad()
        return True

    @torch.no_grad()
    def restore(self) -> None:
        """Moves the parameters back from ``w + e_w`` to ``w`` (exactly: a saved copy)."""
        for p, w in self._saved:
            p.copy_(w)
        self._saved = []

    def second_step(self) -> None:
        """Restores w and lets the base optimiser step with the gradient at ``w + e_w``."""
        self.restore()
        if self.scaler is not None:
            self.scaler.step(self.base_optimizer)
            self.scaler.update()
        else:
            self.base_optimizer.step()
        self.zero_grad()

    def step(
        self,
        closure: Callable[[], torch.Tensor],
        model: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        """One full SAM step.

        Args:
            closure: Runs forward + backward on the batch and returns the loss
                (it must call ``scaler.scale(loss).backward()`` when a scaler is
                used, ``loss.backward()`` otherwise). Called twice.
            model: The module whose BatchNorm statistics are frozen during the
                second pass (None: nothing frozen).

        Returns:
            The loss of the first pass (at w), detached.
        """
        self.zero_grad()
        loss = closure().detach()
        if not self.first_step():
            return loss
        try:
            with frozen_bn_stats(model) if model is not None else contextlib.nullcontext():
                closure()
        except BaseException:
            self.restore()
            raise
        self.second_step()
        return loss

    def state_dict(self) -> dict:
        """The base optimiser's state dict (SAM itself keeps no state between steps)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Loads the base optimiser's state dict."""
        self.base_optimizer.load_state_dict(state)
