"""The CPU bf16 backend: the torch network in bfloat16, traced and frozen per shape.

On CPUs with native bf16 (AVX512-BF16, AMX) oneDNN runs bf16 convolutions several
times faster than fp32. The BatchNorms are folded into the convolutions in fp32
before the cast, and the traced module is frozen (weights become constants). One
frozen module is kept per input shape (the trace records shapes); the
``max_shapes`` most recent stay.
Outputs are returned as float32 tensors. Used only when the bundle's accuracy gate
passed or when asked for (:mod:`hvx.backends.quantize`).
"""

from __future__ import annotations

import collections
import copy
import itertools
import warnings

import torch

from hvx.backends.base import HeadOutputs

__all__ = ["CpuBf16Backend"]


def _fold_batchnorms(module: torch.nn.Module) -> torch.nn.Module:
    """Folds each eval BatchNorm2d that directly follows a Conv2d in a Sequential, in fp32.

    Folding before the cast to bf16 rounds the folded weights once, instead of
    rounding the conv output and the BatchNorm's scale separately.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in [m for m in module.modules() if isinstance(m, torch.nn.Sequential)]:
        items = list(seq._modules.items())
        for (_, conv), (bn_name, bn) in itertools.pairwise(items):
            if (
                isinstance(conv, torch.nn.Conv2d)
                and isinstance(bn, torch.nn.BatchNorm2d)
                and bn.track_running_stats
            ):
                fused = fuse_conv_bn_eval(conv, bn)
                conv.weight, conv.bias = fused.weight, fused.bias
                seq._modules[bn_name] = torch.nn.Identity()
    return module


class CpuBf16Backend:
    """Runs a ``HoVerNetInference`` module in bf16 on the CPU.

    Args:
        module: ``nn.Module`` returning ``(np_prob, hv, tp_prob)`` (not modified).
        max_shapes: Input shapes whose frozen traces are kept.

    Raises:
        ValueError: If ``max_shapes`` < 1.
    """

    name = "torch"
    precision = "bf16"
    device = "cpu"
    input_dtype = torch.float32
    max_batch: int | None = None

    def __init__(self, module: torch.nn.Module, *, max_shapes: int = 4) -> None:
        if max_shapes < 1:
            raise ValueError(f"expected max_shapes >= 1, got {max_shapes}")
        module = _fold_batchnorms(copy.deepcopy(module).eval()).to(dtype=torch.bfloat16)
        self.module = module.to(memory_format=torch.channels_last)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._max = max_shapes
        self._traced: collections.OrderedDict[tuple, torch.jit.ScriptModule] = (
            collections.OrderedDict()
        )

    def _frozen(self, x: torch.Tensor):
        key = tuple(x.shape)
        fn = self._traced.get(key)
        if fn is not None:
            self._traced.move_to_end(key)
            return fn
        with warnings.catch_warnings():  # tracer notes on shape-dependent Python ints
            warnings.simplefilter("ignore")
            # freeze only: adding optimize_for_inference gave no recorded gain
            # (benchmarks/results/cpu-precision-*-2026-12-05.json, both variants)
            fn = torch.jit.freeze(torch.jit.trace(self.module, x, check_trace=False))
        self._traced[key] = fn
        while len(self._traced) > self._max:
            self._traced.popitem(last=False)
        return fn

    def run(self, x) -> HeadOutputs:
        """Runs the network.

        Args:
            x: ``Tensor[N, C, H, W]`` float (CPU) or an ndarray.

        Returns:
            :class:`HeadOutputs` of float32 CPU tensors.

        Raises:
            ValueError: If ``x`` is not a non-empty 4-D array.
        """
        x = torch.as_tensor(x)
        if x.ndim != 4 or x.shape[0] == 0:
            raise ValueError(f"expected a non-empty (N, C, H, W) tensor, got {tuple(x.shape)}")
        x = x.to(device="cpu", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            outs = self._frozen(x)(x)
        return HeadOutputs(*(t.float().contiguous() for t in outs))

    def __repr__(self) -> str:
        return f"CpuBf16Backend(shapes={list(self._traced)})"
