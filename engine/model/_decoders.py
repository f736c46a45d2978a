"""Decoders: the HoVer-Net branches (SPEC §4a/§4b) and the light "fast" decoder.

Both take the four encoder levels ``d0..d3`` (``d0`` the finest) and return one
map per branch at the input resolution. Only static shapes and fixed-factor
upsampling are used: no data-dependent control flow (ONNX / TensorRT friendly).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

__all__ = ["BRANCHES", "HiResStem", "HoVerDecoder", "LightDecoder"]

#: Branch names in HoVer-Net's ModuleDict order; values are computed per model.
BRANCHES = ("tp", "np", "hv")

# HoVer-Net's decoder constants (SPEC §4a). Only the encoder-facing widths
# (conv_bot output and the 1x1 convs that meet the skips) depend on the encoder;
# they are read from feature_info, so with ResNet50 (256, 512, 1024, 2048) this
# is exactly the CoNiC HoVer-Net of SPEC §4b.
_U3_WIDTH, _U3_UNITS = 256, 8  # conv k c2 -> 256, DenseBlock(256, 8 units) -> 512
_U2_WIDTH, _U2_UNITS = 128, 4  # conv k c1 -> 128, DenseBlock(128, 4 units) -> 256
_U1_WIDTH = 64  # conv k c0 -> 64
_DENSE_BOTTLENECK, _DENSE_GROWTH, _DENSE_GROUPS = 128, 32, 4


def _up2_nearest(x: torch.Tensor) -> torch.Tensor:
    """Nearest 2x upsampling (each pixel to a 2x2 block), HoVer-Net's UpSample2x."""
    return functional.interpolate(x, scale_factor=2.0, mode="nearest")


def _conv(cin: int, cout: int, k: int, *, bias: bool = False, groups: int = 1) -> nn.Conv2d:
    """A ``k x k`` convolution with zero padding ``k // 2`` (same size out)."""
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias, groups=groups)


class _DenseUnit(nn.Module):
    """BN-ReLU-conv1x1(bottleneck)-BN-ReLU-conv k (growth, grouped) (SPEC §4a)."""

    def __init__(self, cin: int, ksize: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            _conv(cin, _DENSE_BOTTLENECK, 1),
            nn.BatchNorm2d(_DENSE_BOTTLENECK),
            nn.ReLU(inplace=True),
            _conv(_DENSE_BOTTLENECK, _DENSE_GROWTH, ksize, groups=_DENSE_GROUPS),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, cin, h, w]`` -> ``Tensor[N, growth, h, w]``."""
        return self.body(x)


class _DenseBlock(nn.Module):
    """Densely connected units; output channels ``cin + units * growth``; ends BN-ReLU."""

    def __init__(self, cin: int, units: int, ksize: int) -> None:
        super().__init__()
        self.units = nn.ModuleList(_DenseUnit(cin + i * _DENSE_GROWTH, ksize) for i in range(units))
        self.out_channels = cin + units * _DENSE_GROWTH
        self.norm = nn.BatchNorm2d(self.out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, cin, h, w]`` -> ``Tensor[N, out_channels, h, w]``."""
        for unit in self.units:
            x = torch.cat([x, unit(x)], dim=1)
        return self.act(self.norm(x))


class _HoVerBranch(nn.Module):
    """One HoVer-Net decoder branch (u3, u2, u1, u0 of SPEC §4a), padded convs."""

    def __init__(self, skips: tuple[int, int, int], out_channels: int, ksize: int) -> None:
        super().__init__()
        c0, c1, c2 = skips
        blk3 = _DenseBlock(_U3_WIDTH, _U3_UNITS, ksize)
        self.u3 = nn.Sequential(_conv(c2, _U3_WIDTH, ksize), blk3, _conv(blk3.out_channels, c1, 1))
        blk2 = _DenseBlock(_U2_WIDTH, _U2_UNITS, ksize)
        self.u2 = nn.Sequential(_conv(c1, _U2_WIDTH, ksize), blk2, _conv(blk2.out_channels, c0, 1))
        self.u1 = _conv(c0, _U1_WIDTH, ksize)
        self.u0 = nn.Sequential(
            nn.BatchNorm2d(_U1_WIDTH),
            nn.ReLU(inplace=True),
            _conv(_U1_WIDTH, out_channels, 1, bias=True),
        )

    def forward(self, d: list[torch.Tensor], bot: torch.Tensor) -> torch.Tensor:
        """Decodes ``bot`` (level 3 after conv_bot) with skips ``d[0..2]``."""
        u3 = self.u3(_up2_nearest(bot) + d[2])
        u2 = self.u2(_up2_nearest(u3) + d[1])
        u1 = self.u1(_up2_nearest(u2) + d[0])
        return self.u0(u1)


class HoVerDecoder(nn.Module):
    """conv_bot + three HoVer-Net branches, for encoders whose levels are at H..H/8.

    Args:
        channels: Encoder channels per level ``(c0, c1, c2, c3)`` (feature_info).
        out_channels: Output channels per branch, e.g. ``{"tp": 5, "np": 2, "hv": 2}``.
        ksize: Kernel size of the decoder convs (3, the CoNiC variant).
    """

    def __init__(
        self, channels: tuple[int, ...], out_channels: dict[str, int], ksize: int = 3
    ) -> None:
        super().__init__()
        c0, c1, c2, c3 = channels
        self.conv_bot = _conv(c3, c2, 1)
        self.branches = nn.ModuleDict(
            {name: _HoVerBranch((c0, c1, c2), out_channels[name], ksize) for name in BRANCHES}
        )

    def forward(self, d: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Levels ``d[i]: Tensor[N, c_i, H/2^i, W/2^i]`` -> ``{branch: Tensor[N, C, H, W]}``."""
        bot = self.conv_bot(d[3])
        return {name: branch(d, bot) for name, branch in self.branches.items()}


def _conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(_conv(cin, cout, k), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _up2_bilinear(x: torch.Tensor) -> torch.Tensor:
    return functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class _LightBranch(nn.Module):
    """U-Net-like branch: concat-skip merges at H/16..H/4, then two 2x steps to H."""

    def __init__(
        self, channels: tuple[int, ...], out_channels: int, hires: tuple[int, int] = (0, 0)
    ) -> None:
        super().__init__()
        c0, c1, c2, c3 = channels
        w0, w1, w2 = c0 // 2, c1 // 2, c2 // 2
        wf = max(16, c0 // 4)
        self.m2 = _conv_bn_relu(c3 + c2, w2)
        self.m1 = _conv_bn_relu(w2 + c1, w1)
        self.m0 = _conv_bn_relu(w1 + c0, w0)
        self.f2 = _conv_bn_relu(w0 + hires[1], wf)
        self.f1 = _conv_bn_relu(wf + hires[0], wf)
        self.head = _conv(wf, out_channels, 1, bias=True)

    def forward(
        self, d: list[torch.Tensor], hires: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Levels at H/4..H/32 (and optional H, H/2 skips) -> ``Tensor[N, out, H, W]``."""
        x = self.m2(torch.cat([_up2_bilinear(d[3]), d[2]], dim=1))
        x = self.m1(torch.cat([_up2_bilinear(x), d[1]], dim=1))
        x = self.m0(torch.cat([_up2_bilinear(x), d[0]], dim=1))
        if hires is None:
            x = self.f2(_up2_bilinear(x))
            x = self.f1(_up2_bilinear(x))
        else:
            x = self.f2(torch.cat([_up2_bilinear(x), hires[1]], dim=1))
            x = self.f1(torch.cat([_up2_bilinear(x), hires[0]], dim=1))
        return self.head(x)


class HiResStem(nn.Module):
    """Full- and half-resolution skip features from the input, for stride-4 encoders.

    A stride-4 patchify stem never sees single pixels again; nuclei boundaries
    and the HV maps' sharp sign flips between touching nuclei need them. Two
    cheap conv-BN-ReLU layers at H and one stride-2 layer at H/2 give the light
    decoder's last two steps U-Net skips (the role of HoVer-Net's level ``d0``).

    Args:
        in_chans: Input channels.
        widths: Channels at ``(H, H/2)``.
    """

    def __init__(self, in_chans: int, widths: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        w0, w1 = widths
        self.widths = widths
        self.fullres = nn.Sequential(_conv_bn_relu(in_chans, w0), _conv_bn_relu(w0, w0))
        self.halfres = nn.Sequential(
            nn.Conv2d(w0, w1, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``Tensor[N, in_chans, H, W]`` -> ``[Tensor[N, w0, H, W], Tensor[N, w1, H/2, W/2]]``."""
        full = self.fullres(x)
        return [full, self.halfres(full)]


class LightDecoder(nn.Module):
    """Three light U-Net-like branches for stride-4 encoders (the ``fast_*`` family).

    Widths are half the encoder's at each merge and ``max(16, c0 // 4)`` at H/2
    and H; upsampling is bilinear 2x. HoVer-NeXt-like: few channels, cheap
    full-resolution convolutions.

    Args:
        channels: Encoder channels per level (feature_info), levels at H/4..H/32.
        out_channels: Output channels per branch.
        hires: Channels of the :class:`HiResStem` skips at ``(H, H/2)``, concatenated
            before the last two convolutions; ``(0, 0)`` for none.
    """

    def __init__(
        self,
        channels: tuple[int, ...],
        out_channels: dict[str, int],
        hires: tuple[int, int] = (0, 0),
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleDict(
            {name: _LightBranch(tuple(channels), out_channels[name], hires) for name in BRANCHES}
        )

    def forward(
        self, d: list[torch.Tensor], hires: list[torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Levels ``d[i]`` at H/2^(i+2), optional skips -> ``{branch: Tensor[N, C, H, W]}``."""
        return {name: branch(d, hires) for name, branch in self.branches.items()}
