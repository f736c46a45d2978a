"""ConvNeXt HoVer-Net: the network of hvx (DESIGN §0, SPEC §4b, §7b).

Variants (``list_variants()``):

* ``convnext_small`` (the paper), ``convnext_tiny``, ``convnext_nano``,
  ``convnext_pico``, ``convnext_atto``: timm ConvNeXt encoder whose stride-4
  patchify stem is replaced by a 7x7 stride-1 convolution (+ its LayerNorm), so
  the stages run at H, H/2, H/4, H/8; three HoVer-Net decoders (np, hv, tp) of
  the CoNiC variant (ksize 3, zero padding, nearest 2x upsampling, additive skips).
  Inputs must be multiples of 8.
* ``fast_convnext_atto``, ``fast_convnext_pico``, ``fast_convnext_tiny``: stock
  stride-4 stem and a light U-Net-like decoder (~20-60x fewer FLOPs). Inputs
  must be multiples of 32.
* ``fast_hr_convnext_atto``, ``fast_hr_convnext_pico``: the same with
  full- and half-resolution skips from a small convolutional stem on the input.
* ``hovernet_resnet50``: HoVer-Net's CoNiC baseline (SPEC §4b).

Besides those, :mod:`hvx.model.hovernet` holds the published HoVer-Net itself
(``hovernet_fast`` 256 -> 164, ``hovernet_original`` 270 -> 80, valid padding,
the official state-dict names) for checkpoints imported with
``hvx import-hovernet``; :func:`get_variant` and :func:`create_model` accept
those names, :func:`list_variants` (the trainable ones) does not list them.

``HoVerNet.forward`` returns logits (training); :class:`HoVerNetInference`
returns ``(np_prob, hv, tp_prob)`` with the softmax inside (ONNX export).
Costs per variant: docs/models.md.
"""

from hvx.model._init_from import InitReport
from hvx.model._net import (
    HoVerNet,
    HoVerNetInference,
    VariantSpec,
    create_model,
    get_variant,
    list_variants,
)
from hvx.model.hovernet import OfficialHoVerNet

__all__ = [
    "HoVerNet",
    "HoVerNetInference",
    "InitReport",
    "OfficialHoVerNet",
    "VariantSpec",
    "create_model",
    "get_variant",
    "list_variants",
]
