"""Initialise a HoVerNet encoder from a local timm checkpoint (no downloads).

Accepted files: ``.safetensors`` (read with safetensors, no pickle) or a timm
``.pth``/``.pt``/``.bin`` state dict read with ``torch.load(weights_only=True)``.
Checkpoint keys are timm's classification-model keys (``stem.0.weight``,
``stages.0...``, ``layer1...``); common wrappers (``state_dict``/``model``
entries, ``module.``/``model.``/``encoder.`` prefixes) are unwrapped.

The stem convolution is adapted rather than dropped:

* kernel: a smaller kernel (ConvNeXt's 4x4 patchify) is zero-padded into the
  centre of the 7x7 stride-1 kernel, so each output pixel initially sees the
  same linear patch embedding as the pretrained stem, densely;
* channels: for 6-channel input (B, G, R, S, Cr, Cb; SPEC §7a) the RGB kernels
  are reordered to B, G, R and repeated for S, Cr, Cb; all kernels are scaled by
  ``3 / in_chans`` (timm's ``adapt_input_conv`` rule) so the activation scale is
  kept. For 3-channel (R, G, B) input the kernels are used as they are.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

__all__ = ["InitReport", "adapt_stem_weight", "load_encoder_checkpoint"]

_LOG = logging.getLogger("hvx.model")
_PREFIXES = ("module.", "model.", "encoder.body.", "encoder.", "backbone.", "body.")
_WRAPPERS = ("state_dict", "model", "state_dict_ema", "model_ema")


@dataclasses.dataclass(frozen=True)
class InitReport:
    """What ``init_from`` did.

    Attributes:
        path: Checkpoint path.
        loaded: Encoder parameter/buffer names set from the checkpoint unchanged.
        adapted: ``"name: src_shape -> dst_shape"`` for stem weights that were adapted.
        missing: Encoder names absent from the checkpoint (keep their random init).
        unexpected: Checkpoint keys with no encoder counterpart (e.g. ``head.*``).
        mismatched: ``"name: src_shape vs dst_shape"`` for keys whose shapes differ
            and could not be adapted (not loaded).
    """

    path: str
    loaded: tuple[str, ...]
    adapted: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[str, ...]

    def summary(self) -> str:
        """A readable multi-line report."""
        lines = [
            f"init_from {self.path}: loaded {len(self.loaded)}, adapted {len(self.adapted)}, "
            f"missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
            f"shape-mismatched {len(self.mismatched)}"
        ]
        for title, items in (
            ("adapted", self.adapted),
            ("missing (random init kept)", self.missing),
            ("unexpected (ignored)", self.unexpected),
            ("shape mismatch (not loaded)", self.mismatched),
        ):
            if items:
                lines.append(f"  {title}: " + ", ".join(items))
        return "\n".join(lines)


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"init_from checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"could not read safetensors checkpoint {path}: {exc}") from exc
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for corrupt/pickled files
            raise ValueError(
                f"could not read {path} with torch.load(weights_only=True): {exc}"
            ) from exc
    for _ in range(2):
        if isinstance(sd, dict):
            inner = next((sd[k] for k in _WRAPPERS if isinstance(sd.get(k), dict)), None)
            if inner is not None:
                sd = inner
    if not isinstance(sd, dict):
        raise ValueError(f"expected a state dict in {path}, got {type(sd).__name__}")
    return {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _candidates(key: str) -> list[str]:
    """Encoder-body names that a checkpoint key may denote."""
    keys = [key]
    for p in _PREFIXES:
        if key.startswith(p):
            keys.append(key[len(p) :])
    out = []
    for k in keys:
        out.append(k)
        parts = k.split(".")
        if len(parts) > 2:  # timm FeatureListNet flattens 'stem.0' -> 'stem_0'
            out.append("_".join(parts[:2]) + "." + ".".join(parts[2:]))
    return out


def adapt_stem_weight(w: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor | None:
    """Adapts a pretrained RGB stem kernel to ``shape`` (see the module docstring).

    Args:
        w: ``Tensor[out, in_src, k, k]`` pretrained kernel (RGB input order).
        shape: Target ``(out, in_chans, K, K)``.

    Returns:
        The adapted kernel (float32), or None when it cannot be adapted (different
        ``out``, or a source kernel larger than the target).
    """
    out, cin, kh, kw = shape
    if w.ndim != 4 or w.shape[0] != out or w.shape[2] > kh or w.shape[3] > kw:
        return None
    w = w.float()
    src = w.shape[1]
    if src != cin:
        if src == 3 and cin == 6:
            bgr = w[:, [2, 1, 0]]
            w = torch.cat([bgr, bgr], dim=1) * (3.0 / 6.0)
        else:
            reps = -(-cin // src)
            w = w.repeat(1, reps, 1, 1)[:, :cin] * (src / cin)
    top, left = (kh - w.shape[2]) // 2, (kw - w.shape[3]) // 2
    full = torch.zeros(shape, dtype=torch.float32)
    full[:, :, top : top + w.shape[2], left : left + w.shape[3]] = w
    return full


def load_encoder_checkpoint(model: torch.nn.Module, path: str | Path) -> InitReport:
    """Loads encoder weights from a local checkpoint into ``model.encoder.body``.

    Args:
        model: A HoVerNet.
        path: Checkpoint file.

    Returns:
        The :class:`InitReport` (also logged on the ``hvx.model`` logger).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, or no key of it matches the encoder.
    """
    path = Path(path)
    ckpt = _read_checkpoint(path)
    body = model.encoder.body
    target = body.state_dict()
    stem_key = f"{model.encoder.stem_conv}.weight"
    loaded, adapted, mismatched, unexpected = [], [], [], []
    seen: set[str] = set()
    new_values: dict[str, torch.Tensor] = {}
    for key, value in ckpt.items():
        name = next((c for c in _candidates(key) if c in target), None)
        if name is None:
            unexpected.append(key)
            continue
        seen.add(name)
        dst = target[name]
        if tuple(value.shape) == tuple(dst.shape):
            new_values[name] = value
            loaded.append(name)
        elif name == stem_key and (w := adapt_stem_weight(value, dst.shape)) is not None:
            new_values[name] = w
            adapted.append(f"{name}: {tuple(value.shape)} -> {tuple(dst.shape)}")
        else:
            mismatched.append(f"{name}: {tuple(value.shape)} vs {tuple(dst.shape)}")
    if not new_values:
        raise ValueError(
            f"no tensor of {path} matches the {model.variant!r} encoder "
            f"(timm {model.spec.encoder!r}); first checkpoint keys: {list(ckpt)[:5]}"
        )
    with torch.no_grad():
        for name, value in new_values.items():
            target[name].copy_(value.to(target[name].dtype))
    missing = [k for k in target if k not in seen and not k.endswith("num_batches_tracked")]
    report = InitReport(
        str(path),
        tuple(loaded),
        tuple(adapted),
        tuple(missing),
        tuple(unexpected),
        tuple(mismatched),
    )
    log = _LOG.warning if (missing or mismatched) else _LOG.info
    log("%s", report.summary())
    return report
