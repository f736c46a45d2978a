"""The published HoVer-Net (Graham et al. 2019), in hvx's own code, loading its checkpoints.

The network of the official repository (vqdang/hover_net, MIT) and of TIAToolbox:
a pre-activation ResNet50 encoder and three dense decoders (np, hv, tp), with
*valid* convolutions, so its output is a centred crop of its input:

=========  ======  ======  ==========================================
mode       window  output  differences
=========  ======  ======  ==========================================
original   270     80      7x7 stem unpadded, decoder kernels 5x5
fast       256     164     7x7 stem "same"-padded, decoder kernels 3x3
=========  ======  ======  ==========================================

Sub-modules are registered under the official names (``conv0./``,
``d0.units.1.preact/bn``, ``decoder.np.u3.dense.units.0.conv2``, ...), so an
official state dict loads with ``strict=True``. The only renaming needed by the
published files is documented in :func:`official_state_dict`: the
``module.`` prefix of the DataParallel ``.tar`` files; TIAToolbox's ``.pth`` use
the names unchanged.

Differences from the official forward, none of which changes a value:

* The input is RGB already divided by 255 (hvx's ``PreprocessConfig(mode="rgb")``);
  the official forward divides uint8-valued floats by 255 itself.
* ``upsample2x.unpool_mat`` (a 2x2 block of ones) is kept as a buffer so the
  keys match; the 2x nearest upsampling it implements is done directly.
* Models without a type branch (Kumar, CPM17: "notype") return ``tp`` = the np
  logits, i.e. two types (background, "nucleus") whose softmax equals np's.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from hvx.model._net import VariantSpec, _under_export

__all__ = [
    "MODES",
    "OFFICIAL_VARIANTS",
    "OfficialHoVerNet",
    "official_state_dict",
    "official_variant",
]

#: mode -> (window, output, decoder kernel size).
MODES: dict[str, tuple[int, int, int]] = {"original": (270, 80, 5), "fast": (256, 164, 3)}


def _spec(mode: str, typed: bool) -> VariantSpec:
    window, output, _ = MODES[mode]
    name = f"hovernet_{mode}" + ("" if typed else "_notype")
    what = f"official HoVer-Net ({mode} mode, {window} -> {output} valid)" + (
        "" if typed else ", no type branch"
    )
    return VariantSpec(
        name,
        "preact_resnet50",
        "conv7_valid" if mode == "original" else "conv7_same",
        "hovernet_dense",
        1,
        what,
        mode=mode,
        window=window,
        output=output,
    )


#: Variant name -> spec of the four official network layouts.
OFFICIAL_VARIANTS: dict[str, VariantSpec] = {
    s.name: s for s in (_spec(m, t) for m in MODES for t in (True, False))
}


def official_variant(mode: str, typed: bool) -> str:
    """The hvx variant name of an official layout, e.g. ``hovernet_fast``."""
    if mode not in MODES:
        raise ValueError(f"expected mode 'fast' or 'original', got {mode!r}")
    return _spec(mode, typed).name


def _same_pad(x: torch.Tensor, ksize: int, stride: int) -> torch.Tensor:
    """Zero padding as TensorFlow's "same" (extra pixel at the end), from H, as the original.

    While exporting, H is taken as a multiple of the stride: true for every strided
    convolution of both official windows (256 and 270 -> 264 reach them as even
    sizes), and it keeps the traced graph free of size arithmetic.
    """
    rem = 0 if stride == 1 or _under_export() else int(x.shape[2]) % stride
    total = max(ksize - (stride if rem == 0 else rem), 0)
    lo = total // 2
    hi = total - lo
    return functional.pad(x, (lo, hi, lo, hi))


def _trim(x: torch.Tensor, total: int) -> torch.Tensor:
    """Removes ``total`` rows and columns, ``total // 2`` first, the rest at the end.

    Static slicing (no size reads), so exported graphs carry no shape arithmetic.
    """
    lo, hi = total // 2, total - total // 2
    return x[:, :, lo : -hi or None, lo : -hi or None]


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=0, groups=groups, bias=bias)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-5)


class _Named(nn.Module):
    """A container whose children carry the official (slash-separated) names."""

    def __init__(self, children: dict[str, nn.Module]) -> None:
        super().__init__()
        for name, module in children.items():
            self.add_module(name, module)

    def get(self, name: str) -> nn.Module:
        """The child registered as ``name``."""
        return self._modules[name]


class _BNReLU(_Named):
    """``bn`` then ReLU (the official ``blk_bna``)."""

    def __init__(self, c: int) -> None:
        super().__init__({"bn": _bn(c)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.get("bn")(x))


class _Bottleneck(_Named):
    """Pre-activation bottleneck: [bn-relu] 1x1, bn-relu, same-pad 3x3 (stride), bn-relu, 1x1."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, preact: bool) -> None:
        layers: dict[str, nn.Module] = {"preact/bn": _bn(cin)} if preact else {}
        layers |= {
            "conv1": _conv(cin, mid, 1),
            "conv1/bn": _bn(mid),
            "conv2": _conv(mid, mid, 3, stride=stride),
            "conv2/bn": _bn(mid),
            "conv3": _conv(mid, cout, 1),
        }
        super().__init__(layers)
        self.preact = preact
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.get
        if self.preact:
            x = torch.relu(g("preact/bn")(x))
        x = torch.relu(g("conv1/bn")(g("conv1")(x)))
        x = g("conv2")(_same_pad(x, 3, self.stride))
        x = torch.relu(g("conv2/bn")(x))
        return g("conv3")(x)


class _ResStage(nn.Module):
    """``count`` bottlenecks with running residual sums, then bn-relu (``d0``..``d3``)."""

    def __init__(self, cin: int, mid: int, cout: int, count: int, stride: int) -> None:
        super().__init__()
        self.units = nn.ModuleList(
            _Bottleneck(cin if i == 0 else cout, mid, cout, stride if i == 0 else 1, i > 0)
            for i in range(count)
        )
        self.shortcut = _conv(cin, cout, 1, stride=stride) if cin != cout or stride != 1 else None
        self.blk_bna = _BNReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        for unit in self.units:
            x = unit(x) + skip
            skip = x
        return self.blk_bna(x)


class _DenseUnit(_Named):
    """bn-relu, 1x1 to 128, bn-relu, valid kxk grouped (4) to 32."""

    def __init__(self, cin: int, k: int) -> None:
        super().__init__(
            {
                "preact_bna/bn": _bn(cin),
                "conv1": _conv(cin, 128, 1),
                "conv1/bn": _bn(128),
                "conv2": _conv(128, 32, k, groups=4),
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.get
        x = g("conv1")(torch.relu(g("preact_bna/bn")(x)))
        return g("conv2")(torch.relu(g("conv1/bn")(x)))


class _DenseStage(nn.Module):
    """Dense block: each unit's 32 channels appended to the centre-cropped features."""

    def __init__(self, cin: int, k: int, count: int) -> None:
        super().__init__()
        self.units = nn.ModuleList(_DenseUnit(cin + 32 * i, k) for i in range(count))
        self.blk_bna = _BNReLU(cin + 32 * count)
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = torch.cat([_trim(x, self.k - 1), unit(x)], dim=1)  # valid kxk eats k - 1
        return self.blk_bna(x)


class _Branch(_Named):
    """One decoder branch: ``u3`` (to 512), ``u2`` (to 256), ``u1`` (to 64), ``u0`` (head)."""

    def __init__(self, k: int, out_ch: int) -> None:
        super().__init__(
            {
                "u3": _Named(
                    {
                        "conva": _conv(1024, 256, k),
                        "dense": _DenseStage(256, k, 8),
                        "convf": _conv(512, 512, 1),
                    }
                ),
                "u2": _Named(
                    {
                        "conva": _conv(512, 128, k),
                        "dense": _DenseStage(128, k, 4),
                        "convf": _conv(256, 256, 1),
                    }
                ),
                "u1": _Named({"conva": _conv(256, 64, k)}),
                "u0": _Named({"bn": _bn(64), "conv": _conv(64, out_ch, 1, bias=True)}),
            }
        )
        self.k = k

    @staticmethod
    def _level(level: nn.Module, x: torch.Tensor) -> torch.Tensor:
        g = level.get
        return g("convf")(g("dense")(g("conva")(x)))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """``feats``: [d0 cropped, d1 cropped, d2, d3 after conv_bot]."""
        g = self.get
        x = self._level(g("u3"), _up2(feats[3]) + feats[2])
        x = self._level(g("u2"), _up2(x) + feats[1])
        x = g("u1").get("conva")(_same_pad(_up2(x) + feats[0], self.k, 1))
        head = g("u0")
        return head.get("conv")(torch.relu(head.get("bn")(x)))


def _up2(x: torch.Tensor) -> torch.Tensor:
    """2x nearest-neighbour upsampling (each value copied to a 2x2 block)."""
    return functional.interpolate(x, scale_factor=2.0, mode="nearest")


class _Upsample(nn.Module):
    """Holds the official ``unpool_mat`` buffer (2x2 ones) so checkpoints load strictly."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("unpool_mat", torch.ones(2, 2))


class OfficialHoVerNet(nn.Module):
    """HoVer-Net as published, input ``window`` x ``window``, output its centred crop.

    Attributes:
        variant: ``hovernet_fast``, ``hovernet_original`` or their ``_notype`` twins.
        spec: The :class:`~hvx.model.VariantSpec` (``mode``, ``window``, ``output``).
        mode: "fast" or "original".
        window: Input side (256 / 270).
        output: Output side (164 / 80), the centred crop of the input.
        in_chans: 3 (RGB / 255).
        num_types: Type classes including background (2 for ``_notype``).
        typed: Whether the checkpoint has a type (``tp``) branch.
        size_multiple: 1 (the network takes exactly ``window``; the Engine tiles).
    """

    def __init__(self, spec: VariantSpec, num_types: int = 2) -> None:
        super().__init__()
        if spec.mode not in MODES:
            raise ValueError(f"expected an official HoVer-Net spec, got {spec.name!r}")
        self.variant = spec.name
        self.spec = spec
        self.mode = spec.mode
        self.window, self.output, k = MODES[spec.mode]
        self.in_chans = 3
        self.typed = not spec.name.endswith("_notype")
        if self.typed and num_types < 2:
            raise ValueError(f"expected num_types >= 2 (background included), got {num_types}")
        self.num_types = int(num_types) if self.typed else 2
        self.size_multiple = spec.size_multiple
        self.conv0 = _Named({"/": _conv(3, 64, 7), "bn": _bn(64)})
        self.d0 = _ResStage(64, 64, 256, 3, 1)
        self.d1 = _ResStage(256, 128, 512, 4, 2)
        self.d2 = _ResStage(512, 256, 1024, 6, 2)
        self.d3 = _ResStage(1024, 512, 2048, 3, 2)
        self.conv_bot = _conv(2048, 1024, 1)
        branches = {"tp": _Branch(k, self.num_types)} if self.typed else {}
        branches |= {"np": _Branch(k, 2), "hv": _Branch(k, 2)}
        self.decoder = nn.ModuleDict(branches)
        self.upsample2x = _Upsample()
        # crops of d0, d1 before the decoder: what the valid decoder convolutions eat
        self._crops = (184, 72) if self.mode == "original" else (92, 36)
        self.init_report = None

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        w = self.window
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, w, w) or not x.is_floating_point():
            raise ValueError(
                f"expected float input of shape (N, 3, {w}, {w}) for {self.variant!r} "
                f"(RGB / 255), got {x.dtype} {tuple(x.shape)} (hvx.Engine tiles images)"
            )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Runs the network.

        Args:
            x: ``Tensor[N, 3, window, window]`` float, RGB in [0, 1].

        Returns:
            Logits ``{"np": [N, 2, o, o], "hv": [N, 2, o, o], "tp": [N, num_types, o, o]}``
            with ``o = output``, the centred ``o x o`` of the input (hv is raw).
        """
        if not _under_export():
            self._check_input(x)
        stem = self.conv0
        if self.mode == "fast":
            x = _same_pad(x, 7, 1)
        d0 = self.d0(torch.relu(stem.get("bn")(stem.get("/")(x))))
        d1 = self.d1(d0)
        d2 = self.d2(d1)
        d3 = self.conv_bot(self.d3(d2))
        c0, c1 = self._crops
        feats = [_trim(d0, c0), _trim(d1, c1), d2, d3]
        out = {name: branch(feats) for name, branch in self.decoder.items()}
        tp = out["tp"] if self.typed else out["np"]
        return {"np": out["np"], "hv": out["hv"], "tp": tp}


def official_state_dict(state: dict) -> dict[str, torch.Tensor]:
    """Maps a published checkpoint's state dict to :class:`OfficialHoVerNet` keys.

    The only renaming: a leading ``module.`` (``torch.nn.DataParallel``, the
    official ``.tar`` files) is removed when every key has it. Buffers some
    exports leave out are filled with the values the official model holds:
    ``upsample2x.unpool_mat`` (ones) and BatchNorm ``num_batches_tracked`` (0,
    unused in eval mode).

    Args:
        state: Name -> tensor (already read with ``weights_only=True``).

    Returns:
        A new dict ready for ``load_state_dict(strict=True)``.
    """
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):
        state = {k[len("module.") :]: v for k, v in state.items()}
    else:
        state = dict(state)
    state.setdefault("upsample2x.unpool_mat", torch.ones(2, 2))
    for k in [k for k in state if k.endswith(".running_var")]:
        state.setdefault(k[: -len("running_var")] + "num_batches_tracked", torch.tensor(0))
    return state
