"""timm encoders for hvx's networks, with the stem surgery of SPEC §7b and §4b.

The encoder is a timm ``features_only`` model (``pretrained=False`` always: no
weights are ever downloaded). Two stems exist:

* ``"stride1"``: ConvNeXt's 4x4 stride-4 patchify convolution becomes a 7x7
  stride-1 convolution (padding 3); the LayerNorm that follows it is kept. The
  four stages then run at H, H/2, H/4, H/8 (paper §III-A).
* ``"resnet_stride1"``: torchvision-style ResNet (timm ``resnet50``, Bottleneck
  v1.5) with ``conv1`` a 7x7 stride-1 convolution with bias and no max-pool, so
  layer1..4 run at H, H/2, H/4, H/8 (the CoNiC HoVer-Net, SPEC §4b).
* ``"stock"``: timm's own stem (stride 4): stages at H/4 .. H/32.

Channel widths always come from ``feature_info.channels()``. timm's
``feature_info.reduction()`` describes the stock stem, so the true strides after
the surgery are kept separately (``Encoder.strides``).
"""

from __future__ import annotations

import torch
from torch import nn

# timm is imported inside the two functions that build an encoder: importing it
# costs seconds (it pulls in torchvision and torch._dynamo), and reading a bundle
# or running its cached ONNX export needs no encoder (issue 24 item 5).

__all__ = ["Encoder", "build_encoder"]

#: Factor by which the stem surgery lowers every stage's stride.
_STEM_STRIDE_DROP = {"stride1": 4, "resnet_stride1": 4, "stock": 1}


class Encoder(nn.Module):
    """A timm feature pyramid with four levels.

    Attributes:
        body: timm ``FeatureListNet`` (``features_only=True``).
        channels: Channels per level, from ``feature_info.channels()``.
        strides: True stride of each level relative to the input (after the
            stem surgery), e.g. ``(1, 2, 4, 8)`` for stride-1 stems.
        stem: Name of the stem (``"stride1"``, ``"resnet_stride1"``, ``"stock"``).
        stem_conv: Attribute name of the first convolution inside ``body``.
    """

    def __init__(self, body: nn.Module, stem: str, stem_conv: str) -> None:
        super().__init__()
        self.body = body
        self.stem = stem
        self.stem_conv = stem_conv
        info = body.feature_info
        self.channels: tuple[int, ...] = tuple(int(c) for c in info.channels())
        drop = _STEM_STRIDE_DROP[stem]
        self.strides: tuple[int, ...] = tuple(int(r) // drop for r in info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Runs the encoder.

        Args:
            x: ``Tensor[N, in_chans, H, W]`` float.

        Returns:
            Four feature maps, level ``i`` is ``Tensor[N, channels[i], H/strides[i],
            W/strides[i]]``.
        """
        return self.body(x)


def _convnext_stride1_stem(body: nn.Module, in_chans: int) -> None:
    """Replaces ConvNeXt's patchify conv by a 7x7 stride-1 conv (LayerNorm kept)."""
    old = body.stem_0
    new = nn.Conv2d(
        in_chans,
        old.out_channels,
        kernel_size=7,
        stride=1,
        padding=3,
        bias=old.bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    from timm.layers import trunc_normal_

    # timm's ConvNeXt init for convolutions (trunc normal 0.02, zero bias).
    trunc_normal_(new.weight, std=0.02)
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    body.stem_0 = new


def _resnet_stride1_stem(body: nn.Module, in_chans: int) -> None:
    """SPEC §4b: ``conv1 = Conv2d(in_chans, 64, 7, stride=1, padding=3)`` with bias; no max-pool."""
    old = body.conv1
    new = nn.Conv2d(
        in_chans,
        old.out_channels,
        kernel_size=7,
        stride=1,
        padding=3,
        bias=True,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    # Keep timm's ResNet init for the weight (kaiming normal, fan_out); the bias
    # keeps PyTorch's default init as in the CoNiC model.
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    body.conv1 = new
    body.maxpool = nn.Identity()


def build_encoder(name: str, stem: str, in_chans: int) -> Encoder:
    """Builds a timm feature encoder with the requested stem.

    Args:
        name: timm model name (``convnext_*`` or ``resnet50``).
        stem: ``"stride1"`` (ConvNeXt), ``"resnet_stride1"`` (ResNet) or ``"stock"``.
        in_chans: Input channels (6 for the 6-channel input, 3 for RGB).

    Returns:
        The encoder; weights are timm's random init (deterministic under
        ``torch.manual_seed``).
    """
    import timm

    kwargs: dict = {"features_only": True, "pretrained": False, "in_chans": in_chans}
    if name.startswith("resnet"):
        # layer1..layer4 (skip the stride-2 'act1' level).
        kwargs["out_indices"] = (1, 2, 3, 4)
    body = timm.create_model(name, **kwargs)
    if stem == "stride1":
        _convnext_stride1_stem(body, in_chans)
        stem_conv = "stem_0"
    elif stem == "resnet_stride1":
        _resnet_stride1_stem(body, in_chans)
        stem_conv = "conv1"
    elif stem == "stock":
        stem_conv = "conv1" if name.startswith("resnet") else "stem_0"
    else:
        raise ValueError(f"expected stem 'stride1', 'resnet_stride1' or 'stock', got {stem!r}")
    return Encoder(body, stem, stem_conv)
