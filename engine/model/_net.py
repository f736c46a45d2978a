"""HoVerNet: encoder + decoders, the variant registry, and the inference wrapper."""

from __future__ import annotations

import dataclasses
import itertools

import torch
from torch import nn

from hvx.model._decoders import HiResStem, HoVerDecoder, LightDecoder
from hvx.model._encoder import build_encoder
from hvx.model._init_from import load_encoder_checkpoint

__all__ = [
    "HoVerNet",
    "HoVerNetInference",
    "VariantSpec",
    "create_model",
    "fp16_unsafe_batchnorms",
    "get_variant",
    "list_variants",
    "rebalance_for_fp16",
]

#: Largest finite float16 value.
FP16_MAX = 65504.0


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """What a variant name means.

    Attributes:
        name: Variant name (``list_variants()``).
        encoder: timm model name of the encoder.
        stem: ``"stride1"`` (ConvNeXt 7x7 stride-1), ``"resnet_stride1"`` (SPEC §4b)
            or ``"stock"`` (timm's stride-4 stem).
        decoder: ``"hovernet"`` (three HoVer-Net branches, SPEC §4b), ``"light"``, or
            ``"light_hr"`` (light decoder with full- and half-resolution skips
            from a small convolutional stem on the input).
        size_multiple: Input H and W must be multiples of this.
        description: One line for docs and ``hvx info``.
        mode: Official HoVer-Net mode ("fast" / "original", :mod:`hvx.model.hovernet`),
            None for hvx's own variants.
        window: Input side of a valid-padding network (None: any padded size).
        output: Output side of a valid-padding network: the centred crop of its input.
    """

    name: str
    encoder: str
    stem: str
    decoder: str
    size_multiple: int
    description: str
    mode: str | None = None
    window: int | None = None
    output: int | None = None

    def to_dict(self) -> dict:
        """JSON-ready architecture description (stored in model bundles).

        ``mode``, ``window`` and ``output`` appear only when set (valid-padding
        networks), so the bundles of the other variants are unchanged.
        """
        d = dataclasses.asdict(self)
        del d["description"]
        for k in ("mode", "window", "output"):
            if d[k] is None:
                del d[k]
        return d


def _s1(name: str, what: str) -> VariantSpec:
    return VariantSpec(name, name, "stride1", "hovernet", 8, what)


def _fast(enc: str) -> VariantSpec:
    return VariantSpec(
        f"fast_{enc}",
        enc,
        "stock",
        "light",
        32,
        f"{enc}, stock stride-4 stem, light U-Net decoder (CPU / throughput)",
    )


def _fast_hr(enc: str) -> VariantSpec:
    return VariantSpec(
        f"fast_hr_{enc}",
        enc,
        "stock",
        "light_hr",
        32,
        f"{enc}, stock stride-4 stem, light U-Net decoder with full-resolution skips (CPU)",
    )


_VARIANTS: dict[str, VariantSpec] = {
    v.name: v
    for v in (
        _s1("convnext_small", "the paper: ConvNeXt-small, 7x7 stride-1 stem, HoVer-Net decoders"),
        _s1("convnext_tiny", "ConvNeXt-tiny, 7x7 stride-1 stem, HoVer-Net decoders"),
        _s1("convnext_nano", "ConvNeXt-nano, 7x7 stride-1 stem, HoVer-Net decoders"),
        _s1("convnext_pico", "ConvNeXt-pico, 7x7 stride-1 stem, HoVer-Net decoders"),
        _s1("convnext_atto", "ConvNeXt-atto, 7x7 stride-1 stem, HoVer-Net decoders"),
        _fast("convnext_atto"),
        _fast("convnext_pico"),
        _fast("convnext_tiny"),
        _fast_hr("convnext_atto"),
        _fast_hr("convnext_pico"),
        VariantSpec(
            "hovernet_resnet50",
            "resnet50",
            "resnet_stride1",
            "hovernet",
            8,
            "HoVer-Net CoNiC baseline (SPEC §4b): ResNet50, stride-1 conv1, no max-pool",
        ),
    )
}


def list_variants() -> list[str]:
    """Names accepted by :func:`create_model`, in registry order."""
    return list(_VARIANTS)


def get_variant(variant: str) -> VariantSpec:
    """The :class:`VariantSpec` of a variant name.

    The official HoVer-Net layouts (``hovernet_fast``, ``hovernet_original`` and
    their ``_notype`` twins, :mod:`hvx.model.hovernet`) are accepted too; they are
    imported from published checkpoints, not trained, so :func:`list_variants`
    leaves them out.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    from hvx.model.hovernet import OFFICIAL_VARIANTS

    if isinstance(variant, str) and variant in OFFICIAL_VARIANTS:
        return OFFICIAL_VARIANTS[variant]
    if not isinstance(variant, str) or variant not in _VARIANTS:
        raise ValueError(
            f"expected a variant in {list_variants() + list(OFFICIAL_VARIANTS)}, got {variant!r}"
        )
    return _VARIANTS[variant]


def _under_export() -> bool:
    """True while tracing/exporting/compiling: shape checks would become graph constants."""
    return (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
    )


class HoVerNet(nn.Module):
    """ConvNeXt (or ResNet50) HoVer-Net: a timm encoder and three decoder branches.

    Build it with :func:`create_model`. ``forward`` returns LOGITS (training);
    wrap it in :class:`HoVerNetInference` for probabilities.

    Attributes:
        variant: Variant name.
        spec: Its :class:`VariantSpec` (stored as ``architecture`` in model bundles).
        in_chans: Input channels (6 or 3).
        num_types: Type classes including background (type 0).
        size_multiple: Input H and W must be multiples of this (8 for stride-1
            stems, 32 for the stride-4 ``fast_*`` family).
        feature_channels: Encoder channels per level (from timm ``feature_info``).
        feature_strides: True encoder stride per level.
        hires: The :class:`HiResStem` of ``fast_hr_*`` variants (None otherwise).
        init_report: Result of ``init_from`` (None when randomly initialised).
    """

    def __init__(self, spec: VariantSpec, in_chans: int = 6, num_types: int = 5) -> None:
        super().__init__()
        self.variant = spec.name
        self.spec = spec
        self.in_chans = in_chans
        self.num_types = num_types
        self.size_multiple = spec.size_multiple
        self.encoder = build_encoder(spec.encoder, spec.stem, in_chans)
        self.feature_channels = self.encoder.channels
        self.feature_strides = self.encoder.strides
        out = {"tp": num_types, "np": 2, "hv": 2}
        self.hires: HiResStem | None = None
        if spec.decoder == "hovernet":
            self.decoder: nn.Module = HoVerDecoder(self.feature_channels, out, ksize=3)
        elif spec.decoder == "light_hr":
            self.hires = HiResStem(in_chans)
            self.decoder = LightDecoder(self.feature_channels, out, hires=self.hires.widths)
        else:
            self.decoder = LightDecoder(self.feature_channels, out)
        self.init_report = None

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected input of shape (N, {self.in_chans}, H, W), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"expected a floating-point input, got {x.dtype}")
        h, w = x.shape[-2:]
        m = self.size_multiple
        if h % m or w % m or h == 0 or w == 0:
            raise ValueError(
                f"expected H and W to be positive multiples of {m} for {self.variant!r}, "
                f"got {h}x{w} (pad the input; hvx.Engine does)"
            )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Runs the network.

        Args:
            x: ``Tensor[N, in_chans, H, W]`` float, H and W multiples of ``size_multiple``.

        Returns:
            Logits ``{"np": Tensor[N, 2, H, W], "hv": Tensor[N, 2, H, W],
            "tp": Tensor[N, num_types, H, W]}`` (hv is the regression output itself:
            channel 0 horizontal, 1 vertical).

        Raises:
            ValueError: wrong rank, channel count, dtype or size.
        """
        if not _under_export():
            self._check_input(x)
        if self.hires is None:
            out = self.decoder(self.encoder(x))
        else:
            out = self.decoder(self.encoder(x), self.hires(x))
        return {"np": out["np"], "hv": out["hv"], "tp": out["tp"]}


class HoVerNetInference(nn.Module):
    """Inference head: probabilities, the graph exported to ONNX / TensorRT.

    Args:
        model: The :class:`HoVerNet` to wrap (shared, not copied).
    """

    def __init__(self, model: HoVerNet) -> None:
        super().__init__()
        from hvx.model.hovernet import OfficialHoVerNet

        if not isinstance(model, HoVerNet | OfficialHoVerNet):
            raise TypeError(f"expected a HoVerNet, got {type(model).__name__}")
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Runs the model and turns logits into the HeadOutputs layout (DESIGN §4).

        Args:
            x: ``Tensor[N, in_chans, H, W]`` float.

        Returns:
            ``np_prob`` ``Tensor[N, H, W]`` = softmax(np)[:, 1] in [0, 1];
            ``hv`` ``Tensor[N, 2, H, W]``; ``tp_prob`` ``Tensor[N, num_types, H, W]``
            softmax over types (sums to 1 per pixel).
        """
        out = self.model(x)
        np_prob = torch.softmax(out["np"], dim=1)[:, 1]
        tp_prob = torch.softmax(out["tp"], dim=1)
        return np_prob, out["hv"], tp_prob


def create_model(
    variant: str,
    *,
    in_chans: int = 6,
    num_types: int = 5,
    init_from: str | None = None,
) -> HoVerNet:
    """Builds a HoVerNet variant (random init, deterministic under ``torch.manual_seed``).

    Args:
        variant: One of :func:`list_variants`.
        in_chans: Input channels: 6 (CLAHE + B,G,R,S,Cr,Cb) or 3 (RGB).
        num_types: Type classes including background, >= 2.
        init_from: Optional local encoder checkpoint (``.safetensors``, or a timm
            ``.pth``/``.pt``/``.bin`` read with ``torch.load(weights_only=True)``).
            The stem is adapted to ``in_chans`` and the 7x7 kernel; what was loaded,
            adapted, missing and unexpected is in ``model.init_report`` and logged.

    Returns:
        The model, in training mode, float32 on the CPU.

    Raises:
        ValueError: unknown variant, bad ``in_chans``/``num_types``, unusable checkpoint.
    """
    spec = get_variant(variant)
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans not in (3, 6):
        raise ValueError(f"expected in_chans 3 or 6, got {in_chans!r}")
    if isinstance(num_types, bool) or not isinstance(num_types, int) or num_types < 2:
        raise ValueError(f"expected num_types >= 2 (background included), got {num_types!r}")
    if spec.mode is not None:  # official HoVer-Net: RGB only, weights from a checkpoint
        from hvx.model.hovernet import OfficialHoVerNet

        if in_chans != 3 or init_from is not None:
            raise ValueError(
                f"expected in_chans=3 and no init_from for {variant!r} (import a published "
                "checkpoint with hvx import-hovernet)"
            )
        return OfficialHoVerNet(spec, num_types=num_types)
    model = HoVerNet(spec, in_chans=in_chans, num_types=num_types)
    if init_from is not None:
        model.init_report = load_encoder_checkpoint(model, init_from)
    return model


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d]]:
    """``(bn name, conv, bn)``: each Conv2d directly followed by a BatchNorm2d in a Sequential."""
    pairs = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        kids = list(mod.named_children())
        for (_, a), (bn_name, b) in itertools.pairwise(kids):
            if (
                isinstance(a, nn.Conv2d)
                and isinstance(b, nn.BatchNorm2d)
                and b.running_var is not None
                and a.out_channels == b.num_features
            ):
                pairs.append((f"{name}.{bn_name}" if name else bn_name, a, b))
    return pairs


def fp16_unsafe_batchnorms(model: nn.Module, limit: float = FP16_MAX / 16) -> list[str]:
    """BatchNorm layers whose running statistics break float16 inference.

    A BatchNorm's running variance above float16's largest value (65504) turns
    into ``inf`` when the model is cast to float16, and the layer then outputs
    its bias alone. That is what broke the first default models' fp16 maps (a
    decoder convolution of large ConvNeXt features, variance ~3e5). Layers at
    ``limit`` (default 4094, a 16x margin) or above are reported, as is any
    running mean beyond ``limit``.

    Returns:
        Names of the offending ``BatchNorm2d`` modules (empty: fp16-safe statistics).
    """
    bad = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.BatchNorm2d) and mod.running_var is not None:
            v = mod.running_var.detach().float()
            m = mod.running_mean.detach().float()
            if not torch.isfinite(v).all() or v.max() >= limit or m.abs().max() >= limit:
                bad.append(name)
    return bad


@torch.no_grad()
def rebalance_for_fp16(model: nn.Module, max_var: float = 1024.0) -> list[str]:
    """Rescales conv -> BatchNorm pairs so their statistics fit float16; same function.

    For every output channel c whose running variance ``v_c`` exceeds ``max_var``,
    with ``s_c = sqrt(v_c / max_var)``: the convolution's weights (and bias) of
    channel c are divided by ``s_c``, the BatchNorm's running mean by ``s_c`` and
    its running variance by ``s_c**2``. In eval mode the layer pair computes
    ``(conv(x)/s - m/s) / sqrt(v/s^2 + eps) = (conv(x) - m) / sqrt(v + eps s^2)``,
    the original up to ``eps s^2`` next to ``v`` (relative change < 1e-6 for the
    default ``eps``); the convolution's outputs shrink by ``s_c`` too, so they stay
    far inside float16's range. Call it in eval mode (a training step re-estimates
    the statistics). Idempotent.

    Args:
        model: Modified in place.
        max_var: Target bound of the running variances.

    Returns:
        Names of the BatchNorm modules that were rescaled.
    """
    changed = []
    for name, conv, bn in _conv_bn_pairs(model):
        v = bn.running_var.float()
        s = torch.where(v > max_var, torch.sqrt(v / max_var), torch.ones_like(v))
        if not bool((s > 1).any()):
            continue
        w = conv.weight
        shape = (-1,) + (1,) * (w.ndim - 1)
        conv.weight.copy_((w.float() / s.view(shape)).to(w.dtype))
        if conv.bias is not None:
            conv.bias.copy_((conv.bias.float() / s).to(conv.bias.dtype))
        bn.running_mean.copy_((bn.running_mean.float() / s).to(bn.running_mean.dtype))
        bn.running_var.copy_((v / s**2).to(bn.running_var.dtype))
        changed.append(name)
    return changed
