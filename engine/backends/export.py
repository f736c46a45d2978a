"""ONNX export of the network, its validation, and the key its cached copies go under.

The legacy TorchScript exporter (``dynamo=False``, opset 17; TOOLCHAIN.md) with
dynamic batch and spatial axes and the softmax inside the graph; the input and
output names are :data:`hvx.backends.base.INPUT_NAME` /
:data:`~hvx.backends.base.OUTPUT_NAMES`. Every export is checked with
``onnx.checker`` and run by ONNX Runtime against torch. TensorRT plans built
from an export live in :mod:`hvx.backends.plan`.

An export is cached (``hvx._artifacts``) under :func:`export_cache_key`, which
hashes only what determines the graph: the weights' SHA-256, the architecture,
the channel and class counts, the opset, the traced size, and
:data:`EXPORT_FORMAT_VERSION`. So re-saving a bundle (new ``created`` time,
provenance, metrics) or upgrading hvx keeps the cached export, unless the
exporter itself changed and bumped the version.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

from hvx.backends.base import INPUT_NAME, OUTPUT_NAMES
from hvx.backends.onnxruntime import OnnxRuntimeBackend
from hvx.io.atomic import atomic_write

__all__ = [
    "EXPORT_FORMAT_VERSION",
    "ONNX_OPSET",
    "canonical_onnx_bytes",
    "export_cache_key",
    "export_onnx",
    "validate_onnx",
]

log = logging.getLogger(__name__)

ONNX_OPSET = 17
#: Bump when the graph exported for the same weights and settings changes (the
#: ``torch.onnx.export`` call, ``HoVerNetInference``'s heads, the traced input):
#: it is part of :func:`export_cache_key`, so cached exports are then redone.
EXPORT_FORMAT_VERSION = 1


def export_cache_key(
    *,
    weights_sha256: str,
    architecture: dict,
    in_chans: int,
    num_types: int,
    example_size: int,
    fixed_size: bool,
    opset: int = ONNX_OPSET,
) -> str:
    """The cache key of an export: a hash of everything that determines the graph.

    The hvx version, the bundle's creation time, provenance and metrics are not
    part of it (they do not change the graph); :data:`EXPORT_FORMAT_VERSION` is.

    Args:
        weights_sha256: SHA-256 of the bundle's weights file (``model.json`` records it).
        architecture: The variant's ``ModelSpec.to_dict()``.
        in_chans: Network input channels.
        num_types: Type classes including background.
        example_size: H = W of the traced batch.
        fixed_size: Whether H and W are fixed (valid-padding networks).
        opset: ONNX opset.

    Returns:
        24 hex characters.
    """
    doc = {
        "export_format_version": EXPORT_FORMAT_VERSION,
        "opset": int(opset),
        "weights_sha256": str(weights_sha256),
        "architecture": architecture,
        "in_chans": int(in_chans),
        "num_types": int(num_types),
        "example_size": int(example_size),
        "fixed_size": bool(fixed_size),
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


# --------------------------------------------------------------------------- ONNX


def export_onnx(
    module,
    path: str | os.PathLike,
    *,
    in_chans: int,
    example_size: int = 64,
    opset: int = ONNX_OPSET,
    validate: bool = True,
    atol: float = 1e-4,
    fixed_size: bool = False,
) -> Path:
    """Exports a ``HoVerNetInference``-style module to ONNX with dynamic N, H, W.

    With ``fixed_size`` (valid-padding networks such as the published HoVer-Net,
    which take exactly one window size) only N is dynamic and H = W =
    ``example_size``.

    Args:
        module: ``nn.Module`` returning ``(np_prob, hv, tp_prob)``; it is put in
            eval mode and run on the CPU in float32 (moved there if needed).
        path: Output ``.onnx`` file (written atomically).
        in_chans: Input channels C of the network (6 or 3).
        example_size: H = W of the example batch traced (any multiple of the
            model's size_multiple; the axes stay dynamic).
        opset: ONNX opset (17: what the legacy exporter and TensorRT 10 agree on).
        validate: Run :func:`validate_onnx` on the result.
        atol: Maximum absolute error allowed by the validation.
        fixed_size: Keep H and W fixed at ``example_size`` (batch stays dynamic).

    Returns:
        The path written.

    Raises:
        ValueError: For in_chans < 1 or a failed validation.
    """
    import torch

    if in_chans < 1 or example_size < 1:
        raise ValueError(
            f"expected in_chans >= 1 and example_size >= 1, got {in_chans}, {example_size}"
        )
    module = module.eval().float().cpu()
    gen = torch.Generator().manual_seed(0)
    # Batch 2: a batch of 1 lets exporters specialise the batch axis.
    x = torch.rand(2, in_chans, example_size, example_size, generator=gen)
    axes = {"N": "batch", "H": "height", "W": "width"}
    dynamic_axes = {
        INPUT_NAME: {0: axes["N"], 2: axes["H"], 3: axes["W"]},
        "np_prob": {0: axes["N"], 1: axes["H"], 2: axes["W"]},
        "hv": {0: axes["N"], 2: axes["H"], 3: axes["W"]},
        "tp_prob": {0: axes["N"], 2: axes["H"], 3: axes["W"]},
    }
    if fixed_size:
        dynamic_axes = {name: {0: axes["N"]} for name in dynamic_axes}
    buf = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (TOOLCHAIN.md): silence its notice.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        # F.pad lowers to Slice ops with steps -1 that the exporter does not fold (a
        # notice, not an error; ONNX Runtime / TensorRT fold them): the HoVer-Net "same" pads
        warnings.filterwarnings("ignore", message=".*Only steps=1 can be constant folded.*")
        torch.onnx.export(
            module,
            (x,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    data = buf.getvalue()
    if validate:
        shapes = (
            ((1, example_size, example_size), (3, example_size, example_size))
            if fixed_size
            else ((1, 64, 64), (3, 32, 96))
        )
        validate_onnx(data, module, in_chans=in_chans, atol=atol, shapes=shapes)
    path = Path(path)
    atomic_write(path, data)
    log.info("exported ONNX (opset %d, %.1f MB) to %s", opset, len(data) / 2**20, path)
    return path


def validate_onnx(
    model: bytes | str | os.PathLike,
    module=None,
    *,
    in_chans: int,
    shapes: tuple[tuple[int, int, int], ...] = ((1, 64, 64), (3, 32, 96)),
    atol: float = 1e-4,
) -> dict[str, float]:
    """Checks an export with ``onnx.checker`` and (given ``module``) ONNX Runtime vs torch.

    Args:
        model: ONNX bytes or path.
        module: The torch module exported (None: checker only).
        in_chans: Input channels C.
        shapes: (N, H, W) of the random batches compared, different from the
            traced one so that a frozen axis shows up.
        atol: Maximum absolute error allowed per head.

    Returns:
        ``{"np_prob": err, "hv": err, "tp_prob": err}``, the worst max abs errors.

    Raises:
        ValueError: If the checker fails, the names are not hvx's, or an error exceeds atol.
    """
    import numpy as np
    import onnx

    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    proto = onnx.load_from_string(data)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        raise ValueError(f"expected a valid ONNX model, the checker says: {err}") from err
    outs = [o.name for o in proto.graph.output]
    if [i.name for i in proto.graph.input] != [INPUT_NAME] or tuple(outs) != OUTPUT_NAMES:
        raise ValueError(f"expected outputs {list(OUTPUT_NAMES)}, got {outs}")
    errors = dict.fromkeys(OUTPUT_NAMES, 0.0)
    if module is None:
        return errors
    import torch

    ort_backend = OnnxRuntimeBackend(data)
    gen = torch.Generator().manual_seed(1)
    for n, h, w in shapes:
        x = torch.rand(n, in_chans, h, w, generator=gen)
        with torch.no_grad():
            ref = [t.numpy() for t in module(x)]
        got = ort_backend.run(x.numpy())
        for name, r, g in zip(OUTPUT_NAMES, ref, (got.np_prob, got.hv, got.tp_prob), strict=True):
            if r.shape != g.shape:
                raise ValueError(f"expected {name} of shape {r.shape} from ONNX, got {g.shape}")
            errors[name] = max(errors[name], float(np.abs(r - g).max()))
    worst = max(errors.values())
    if worst > atol:
        raise ValueError(
            f"expected ONNX Runtime within {atol} of torch, got max abs errors {errors}"
        )
    return errors


def canonical_onnx_bytes(data: bytes) -> bytes:
    """Returns ``data`` with cosmetic fields cleared and a deterministic serialisation.

    Clears model/graph/node doc strings and the producer version (they differ
    between otherwise identical exports) so that equal graphs hash equal.
    """
    import onnx

    proto = onnx.load_from_string(data)
    proto.doc_string = ""
    proto.producer_version = ""
    proto.graph.doc_string = ""
    for node in proto.graph.node:
        node.doc_string = ""
    return proto.SerializeToString(deterministic=True)
