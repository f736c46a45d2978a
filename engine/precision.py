"""Does a model keep its results in float16? Checked, not assumed.

fp16 inference halves memory traffic and doubles tensor-core throughput, but a
network can lose its results in it: the first default models had decoder
BatchNorms whose running variances (up to 3.4e5) exceed float16's largest value
(65504), so the cast made them ``inf`` and those layers output their bias alone
(instance-map PQ 0.83-0.85 against float32 on the sample tiles). Per-layer
measurements (issue 20) put the whole error there, not in the convolutions
ahead of them (their fp16 outputs stayed within 0.5% of float32).
``hvx.model._net.rebalance_for_fp16`` rescales such conv -> BatchNorm pairs
without changing the function, and ``hvx-train`` applies it to every bundle;
older bundles may still carry such layers. So
``Engine.load(precision="auto")`` on a GPU runs :func:`check_fp16` on the
device first (:func:`auto_cuda_precision`) and uses fp16 only when the instance
maps stay within :data:`FP16_MIN_PQ` of the float32 ones.

Both runs go through ``hvx.Engine.from_model``: the preprocessing, padding (or
the valid-window tiling of a valid-padding network), cropping and
post-processing users get, with the float32 network and its float16 copy.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

import numpy as np
import torch

from hvx.engine import Engine
from hvx.metrics import pq_stats

__all__ = ["FP16_MIN_PQ", "Fp16Check", "auto_cuda_precision", "check_fp16"]

log = logging.getLogger("hvx.engine")

#: Smallest mean PQ of the fp16 instance maps against the fp32 ones (same bound as
#: the bundle storage check of ``scripts/ship_default_model.py``).
FP16_MIN_PQ = 0.99


@dataclasses.dataclass(frozen=True)
class Fp16Check:
    """Result of :func:`check_fp16`.

    Attributes:
        pq: Mean over the tiles of the binary PQ of the fp16 instance maps, with
            the fp32 maps as ground truth (1.0: identical nuclei).
        max_abs: Largest absolute difference per head (``np``, ``hv``, ``tp``).
        tiles: Number of tiles compared.
        device: Where it ran.
    """

    pq: float
    max_abs: dict[str, float]
    tiles: int
    device: str

    @property
    def ok(self) -> bool:
        """True when fp16 keeps the instance maps (``pq >= FP16_MIN_PQ``)."""
        return self.pq >= FP16_MIN_PQ


def check_fp16(
    model: torch.nn.Module,
    preprocess_config: Any,
    postprocess_config: Any,
    images: np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> Fp16Check:
    """Runs a model in float32 and in float16 and compares the instance maps.

    Args:
        model: A ``hvx.model.HoVerNet`` (not modified: fp16 runs on a copy).
        preprocess_config: The bundle's ``PreprocessConfig``.
        postprocess_config: The bundle's ``PostprocessConfig``.
        images: uint8 RGB ``(N, H, W, 3)``; None: the packaged sample tiles
            (``hvx.assets``).
        device: Where both runs happen ("cpu" works too: torch runs float16
            convolutions there, slowly).

    Returns:
        The :class:`Fp16Check`.

    Raises:
        ValueError: If ``images`` is not a non-empty uint8 (N, H, W, 3) array.
    """
    if images is None:
        from hvx.assets import sample_paths
        from hvx.io import read_image

        images = np.stack([read_image(p) for p in sample_paths()])
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or not images.size:
        raise ValueError(f"images: expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    dev = torch.device(device)
    net = copy.deepcopy(model).eval().to(device=dev, dtype=torch.float32)
    heads, results = [], []
    for dtype in (torch.float32, torch.float16):  # the copy is cast after the fp32 run
        engine = Engine.from_model(net.to(dtype=dtype), preprocess_config, postprocess_config)
        h = engine.heads(images)[0].numpy()
        heads.append((h.np_prob, h.hv, h.tp_prob))
        results.append(engine.postprocess(h))
    (ref, half), (a, b) = heads, results
    # two empty maps agree (PQ's own rule would score them 0)
    pqs = [
        1.0 if not (a.inst[k].any() or b.inst[k].any()) else pq_stats(a.inst[k], b.inst[k]).pq
        for k in range(len(images))
    ]
    diffs = {
        name: float(np.abs(u - v).max())
        for name, u, v in zip(("np", "hv", "tp"), ref, half, strict=True)
    }
    return Fp16Check(pq=float(np.mean(pqs)), max_abs=diffs, tiles=len(images), device=str(dev))


def auto_cuda_precision(bundle, dev: str, path, model=None) -> str:
    """fp16 when it keeps this model's instance maps on ``dev``, else fp32 (logged).

    What ``Engine.load(precision="auto")`` and ``hvx build --tensorrt`` pick on a GPU.

    Args:
        bundle: The ``hvx.bundle.ModelBundle``.
        dev: The CUDA device.
        path: The bundle's path (for the warning).
        model: The bundle's network if already built (it is not modified).
    """
    model = bundle.build_model("cpu") if model is None else model
    check = check_fp16(model, bundle.preprocess, bundle.postprocess, device=dev)
    if check.ok:
        return "fp16"
    log.warning(
        "fp16 changes the results of %s (instance-map PQ %.3f against fp32 on %d sample "
        "tiles, largest head differences %s): running fp32; pass precision='fp16' to force it",
        path,
        check.pq,
        check.tiles,
        {k: round(v, 3) for k, v in check.max_abs.items()},
    )
    return "fp32"
