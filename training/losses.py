"""HoVer-Net training losses (SPEC §4c) and the asymmetric Unified Focal loss (SPEC §7c).

Layout: hvx works channels-first (NCHW) throughout; the reference code is NHWC,
so "the last axis" of SPEC §4c is the channel axis ``dim=1`` here. Every term is
computed in float32 (logits from an autocast region are upcast first).

The ``msge`` orientation (SPEC §4c quirk). The reference PyTorch port builds its
5x5 gradient kernels with ``torch.meshgrid(..., indexing="ij")``, so its kernel
``kh`` differentiates along *rows*: it penalises errors of d(h-map)/dy and
d(v-map)/dx. The TensorFlow original differentiated the h-map along x and the
v-map along y (which is also what post-processing's Sobel filters look at).
hvx reproduces the PyTorch port by default (``orientation="ij"``, the behaviour
of the code the paper's numbers come from; all shipped configs keep it) and
offers ``orientation="xy"`` for the TensorFlow orientation.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812

__all__ = [
    "HoVerLoss",
    "LossWeights",
    "dice_loss",
    "mse_loss",
    "msge_loss",
    "one_hot",
    "sobel_kernels",
    "unified_focal_loss",
    "xentropy_loss",
]

_EPS = 1e-7  # probability clamp of xentropy and of the Unified Focal loss


def _check_pair(prob: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if prob.ndim != 4:
        raise ValueError(
            f"{name}: expected probabilities (N, C, H, W), got shape {tuple(prob.shape)}"
        )
    if target.shape != prob.shape:
        raise ValueError(
            f"{name}: expected a one-hot target of shape {tuple(prob.shape)}, "
            f"got {tuple(target.shape)}"
        )


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot encodes a label map, channels first.

    Args:
        labels: Tensor[N, H, W] integer, values in [0, num_classes).
        num_classes: Number of channels C.

    Returns:
        Tensor[N, C, H, W] float32.

    Raises:
        ValueError: If ``labels`` is not 3-D integer or holds a value outside [0, C).
    """
    if labels.ndim != 3 or labels.dtype.is_floating_point:
        raise ValueError(
            f"expected an integer label map (N, H, W), got {labels.dtype} {tuple(labels.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"expected labels in [0, {num_classes}), got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    return F.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()


def xentropy_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on probabilities (SPEC §4c ``xentropy``).

    ``p /= sum_c p``; clamp to [1e-7, 1 - 1e-7]; ``-sum_c t log p`` per pixel; mean
    over the N*H*W pixels.

    Args:
        prob: Tensor[N, C, H, W] float, softmax probabilities.
        target: Tensor[N, C, H, W] float, one-hot.

    Returns:
        Scalar float32 tensor.
    """
    _check_pair(prob, target, "xentropy_loss")
    p = prob.float()
    p = p / p.sum(dim=1, keepdim=True)
    p = p.clamp(_EPS, 1.0 - _EPS)
    return -(target.float() * torch.log(p)).sum(dim=1).mean()


def dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1e-3) -> torch.Tensor:
    """Soft Dice loss summed over channels (SPEC §4c ``dice``; background included).

    Per channel c over (N, H, W): ``1 - (2 sum(p t) + s) / (sum p + sum t + s)``.

    Args:
        prob: Tensor[N, C, H, W] float, softmax probabilities.
        target: Tensor[N, C, H, W] float, one-hot.
        smooth: The smoothing term s (1e-3 in the reference).

    Returns:
        Scalar float32 tensor in [0, C].
    """
    _check_pair(prob, target, "dice_loss")
    p, t = prob.float(), target.float()
    dims = (0, 2, 3)
    inse = (p * t).sum(dims)
    denom = p.sum(dims) + t.sum(dims)
    return (1.0 - (2.0 * inse + smooth) / (denom + smooth)).sum()


def unified_focal_loss(
    prob: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: float = 0.5,
    delta: float = 0.6,
    gamma: float = 0.5,
) -> torch.Tensor:
    """Asymmetric Unified Focal loss (SPEC §7c; Yeung et al. 2022); class 0 = background.

    With p clamped to [1e-7, 1 - 1e-7], y one-hot, N pixels, e = 1e-7:

    - ``L_F = (1/N) sum_pix [(1-d)(1-p_0)^g (-y_0 log p_0) + d sum_{c>=1} (-y_c log p_c)]``
    - ``TI_c = (TP_c + e) / (TP_c + d FN_c + (1-d) FP_c + e)`` over the batch,
      ``L_FT = mean_c(term_c)``, ``term_0 = 1 - TI_0``, ``term_c = (1 - TI_c)^(1-g)``
    - ``L_UF = w L_FT + (1-w) L_F``.

    ``1 - TI_c`` is floored at 1e-12 before the power so a perfect class gives a
    finite (zero) gradient instead of ``inf`` (the value changes by < 1e-6).

    Args:
        prob: Tensor[N, C, H, W] float, softmax probabilities, C >= 2.
        target: Tensor[N, C, H, W] float, one-hot.
        weight: w, the share of the focal Tversky part.
        delta: d, the weight of false negatives (and of the foreground CE).
        gamma: g, the focal exponent.

    Returns:
        Scalar float32 tensor.

    Raises:
        ValueError: On mismatched shapes, C < 2, or parameters outside [0, 1].
    """
    _check_pair(prob, target, "unified_focal_loss")
    if prob.shape[1] < 2:
        raise ValueError(f"expected C >= 2 channels (background + classes), got {prob.shape[1]}")
    for name, v in (("weight", weight), ("delta", delta), ("gamma", gamma)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"expected {name} in [0, 1], got {v}")
    p = prob.float().clamp(_EPS, 1.0 - _EPS)
    y = target.float()
    ce = -y * torch.log(p)  # (N, C, H, W)
    back = (1.0 - delta) * torch.pow(1.0 - p[:, 0], gamma) * ce[:, 0]
    fore = delta * ce[:, 1:].sum(dim=1)
    focal = (back + fore).mean()

    dims = (0, 2, 3)
    tp = (y * p).sum(dims)
    fn = (y * (1.0 - p)).sum(dims)
    fp = ((1.0 - y) * p).sum(dims)
    ti = (tp + _EPS) / (tp + delta * fn + (1.0 - delta) * fp + _EPS)
    miss = (1.0 - ti).clamp_min(1e-12)
    terms = torch.cat([miss[:1], torch.pow(miss[1:], 1.0 - gamma)])
    tversky = terms.mean()
    return weight * tversky + (1.0 - weight) * focal


def mse_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements (SPEC §4c ``mse``).

    Args:
        pred: Tensor[N, 2, H, W] float, raw hv output.
        true: Tensor[N, 2, H, W] float, hv target.

    Returns:
        Scalar float32 tensor.
    """
    if pred.shape != true.shape:
        raise ValueError(
            f"mse_loss: expected equal shapes, got {tuple(pred.shape)} and {tuple(true.shape)}"
        )
    return ((pred.float() - true.float()) ** 2).mean()


def sobel_kernels(
    orientation: Literal["ij", "xy"] = "ij", device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5x5 msge gradient kernels ``(k_for_h_map, k_for_v_map)`` (SPEC §4c).

    ``a, b = meshgrid(arange(-2, 3), arange(-2, 3), indexing="ij")`` (a = row offset,
    b = column offset), ``ka = a / (a^2 + b^2 + 1e-15)``, ``kb = b / (...)``. With
    ``"ij"`` (the PyTorch port) the h-map gets ``ka`` (d/dy) and the v-map ``kb``
    (d/dx); with ``"xy"`` (the TF original) the h-map gets ``kb`` (d/dx) and the
    v-map ``ka`` (d/dy).

    Args:
        orientation: "ij" or "xy".
        device: Torch device of the kernels.

    Returns:
        Two Tensor[5, 5] float32, applied as cross-correlation (``F.conv2d``).
    """
    if orientation not in ("ij", "xy"):
        raise ValueError(f"expected orientation 'ij' or 'xy', got {orientation!r}")
    r = torch.arange(-2, 3, dtype=torch.float32, device=device)
    a, b = torch.meshgrid(r, r, indexing="ij")
    den = a * a + b * b + 1e-15
    ka, kb = a / den, b / den
    return (ka, kb) if orientation == "ij" else (kb, ka)


def msge_loss(
    pred: torch.Tensor,
    true: torch.Tensor,
    focus: torch.Tensor,
    orientation: Literal["ij", "xy"] = "ij",
) -> torch.Tensor:
    """Mean squared gradient error inside nuclei (SPEC §4c ``msge``).

    Gradients of channel 0 (h) and channel 1 (v) of pred and true by the 5x5
    kernels of :func:`sobel_kernels` (zero padding 2); the loss is
    ``sum(F (dpred - dtrue)^2) / (sum(F) + 1e-8)`` with F the np target on both
    channels.

    Args:
        pred: Tensor[N, 2, H, W] float, raw hv output.
        true: Tensor[N, 2, H, W] float, hv target.
        focus: Tensor[N, H, W], the np target (0/1).
        orientation: "ij" (PyTorch port, default) or "xy" (TF original).

    Returns:
        Scalar float32 tensor.
    """
    if pred.ndim != 4 or pred.shape[1] != 2 or pred.shape != true.shape:
        raise ValueError(
            f"msge_loss: expected pred and true of shape (N, 2, H, W), got "
            f"{tuple(pred.shape)} and {tuple(true.shape)}"
        )
    if focus.shape != (pred.shape[0], *pred.shape[2:]):
        raise ValueError(
            f"msge_loss: expected focus of shape {(pred.shape[0], *pred.shape[2:])}, "
            f"got {tuple(focus.shape)}"
        )
    kh, kv = sobel_kernels(orientation, device=pred.device)
    weight = torch.stack([kh, kv])[:, None]  # (2, 1, 5, 5), one kernel per channel

    def grad(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x.float(), weight, padding=2, groups=2)

    f = focus.float()[:, None].expand(-1, 2, -1, -1)
    diff = grad(pred) - grad(true)
    return (f * diff * diff).sum() / (f.sum() + 1e-8)


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Per-branch loss weights and Unified Focal loss parameters.

    A term with weight 0 is not computed. The reference HoVer-Net (SPEC §4c) is
    ``np_ce = np_dice = tp_ce = tp_dice = hv_mse = hv_msge = 1``; the paper
    (SPEC §7c) replaces cross-entropy by the Unified Focal loss on np and tp.

    Attributes:
        np_ce: Cross-entropy on the np branch.
        np_ufl: Unified Focal loss on the np branch.
        np_dice: Dice on the np branch.
        tp_ce: Cross-entropy on the tp branch.
        tp_ufl: Unified Focal loss on the tp branch.
        tp_dice: Dice on the tp branch.
        hv_mse: MSE on the hv branch.
        hv_msge: MSGE on the hv branch.
        ufl_weight: w of the Unified Focal loss (Tversky share).
        ufl_delta: delta of the Unified Focal loss.
        ufl_gamma: gamma of the Unified Focal loss.
        msge_orientation: "ij" (PyTorch port, reproduces the reference) or "xy".
    """

    np_ce: float = 0.0
    np_ufl: float = 1.0
    np_dice: float = 1.0
    tp_ce: float = 0.0
    tp_ufl: float = 1.0
    tp_dice: float = 1.0
    hv_mse: float = 1.0
    hv_msge: float = 1.0
    ufl_weight: float = 0.5
    ufl_delta: float = 0.6
    ufl_gamma: float = 0.5
    msge_orientation: Literal["ij", "xy"] = "ij"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "msge_orientation":
                if v not in ("ij", "xy"):
                    raise ValueError(f"expected loss.msge_orientation 'ij' or 'xy', got {v!r}")
            elif isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ValueError(f"expected loss.{f.name} a number >= 0, got {v!r}")
        for name in ("ufl_weight", "ufl_delta", "ufl_gamma"):
            if getattr(self, name) > 1:
                raise ValueError(f"expected loss.{name} in [0, 1], got {getattr(self, name)}")


def _check_valid(valid: torch.Tensor, n: int) -> torch.Tensor:
    """Checks a ``tp_valid`` mask: Tensor[n] bool (on the logits' device)."""
    if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool or valid.shape != (n,):
        got = (
            f"{valid.dtype} {tuple(valid.shape)}"
            if isinstance(valid, torch.Tensor)
            else type(valid).__name__
        )
        raise ValueError(f"tp_valid: expected a bool tensor of shape ({n},), got {got}")
    return valid


class HoVerLoss(torch.nn.Module):
    """The weighted sum of the per-branch terms of :class:`LossWeights`.

    ``forward(outputs, targets)`` takes the model's logits
    ``{"np": (N,2,H,W), "hv": (N,2,H,W), "tp": (N,C,H,W)}`` and the targets
    ``{"np": (N,H,W) int64, "hv": (N,2,H,W) float32, "tp": (N,H,W) int64}``
    and returns ``(total, parts)``: the scalar loss and a dict of the unweighted
    terms (``"np_ufl"``, ``"hv_msge"``, ...) as detached tensors, for logging.

    An optional ``targets["tp_valid"]`` (N,) bool marks the samples that have class
    labels: the tp terms are computed on those samples only (a batch without any
    has no tp terms), so instance-only data (MoNuSeg) trains np and hv and never
    teaches the type head that its nuclei are background.
    """

    def __init__(self, weights: LossWeights = LossWeights()) -> None:
        super().__init__()
        self.weights = weights

    def _branch(
        self, prefix: str, logits: torch.Tensor, labels: torch.Tensor, parts: dict
    ) -> list[torch.Tensor]:
        w = self.weights
        prob = torch.softmax(logits.float(), dim=1)
        onehot = one_hot(labels, logits.shape[1])
        terms = []
        for name in ("ce", "ufl", "dice"):
            weight = getattr(w, f"{prefix}_{name}")
            if not weight:
                continue
            if name == "ce":
                value = xentropy_loss(prob, onehot)
            elif name == "ufl":
                value = unified_focal_loss(
                    prob, onehot, weight=w.ufl_weight, delta=w.ufl_delta, gamma=w.ufl_gamma
                )
            else:
                value = dice_loss(prob, onehot)
            parts[f"{prefix}_{name}"] = value.detach()
            terms.append(weight * value)
        return terms

    def forward(
        self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns ``(total loss, unweighted parts)``; see the class docstring."""
        for key in ("np", "hv", "tp"):
            if key not in outputs or key not in targets:
                raise ValueError(
                    f"expected outputs and targets with keys np, hv, tp; got "
                    f"{sorted(outputs)} and {sorted(targets)}"
                )
        w = self.weights
        parts: dict[str, torch.Tensor] = {}
        terms = self._branch("np", outputs["np"], targets["np"], parts)
        tp_logits, tp_labels = outputs["tp"], targets["tp"]
        valid = targets.get("tp_valid")
        if valid is not None:
            valid = _check_valid(valid, tp_logits.shape[0])
            if not bool(valid.all()):
                tp_logits, tp_labels = tp_logits[valid], tp_labels[valid]
        if tp_logits.shape[0]:
            terms += self._branch("tp", tp_logits, tp_labels, parts)
        hv_pred, hv_true = outputs["hv"], targets["hv"]
        if w.hv_mse:
            parts["hv_mse"] = (v := mse_loss(hv_pred, hv_true)).detach()
            terms.append(w.hv_mse * v)
        if w.hv_msge:
            v = msge_loss(hv_pred, hv_true, targets["np"], w.msge_orientation)
            parts["hv_msge"] = v.detach()
            terms.append(w.hv_msge * v)
        if not terms:
            raise ValueError("expected at least one loss weight > 0, got all zero")
        return torch.stack(terms).sum(), parts
