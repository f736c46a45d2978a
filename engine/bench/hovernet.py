"""Bench stage ``hovernet``: the published HoVer-Net (fast) end to end, hvx vs the official code.

Same real tiles (CoNSeP 256 x 256, i.e. 2 x 2 windows of 256 -> 164 each), same
weights (random, official layout, imported with ``hvx import-hovernet``):

- hvx: ``Engine.infer(tiles)``: RGB / 255, the Engine's backend over the
  windows in tile mode, native C++ post-processing;
- baseline: the official pipeline per tile, run from the official code itself
  (``net_desc.HoVerNet`` fp32 eager, the tile mode of its ``infer/tile.py``
  -- reflect padding, windows, ``infer_step``'s softmax / argmax, assembly -- and
  its ``post_proc.process`` with instance info, as ``run_infer.py tile`` does).

The official code is not part of hvx: it is imported at run time from
``$HVX_HOVERNET_REFERENCE`` (default
``../shared/reference/hover_net`` beside the checkout); it needs matplotlib and
scipy. Without it the stage records nothing and says why (no stand-in baseline).
Timed in alternation (:mod:`hvx.bench.paired`).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from hvx.bench import _inputs, harness, paired
from hvx.bench.network import load_engine, torch_threads

log = logging.getLogger("hvx.bench")

NAME = "hovernet"
HELP = (
    "published HoVer-Net fast (random weights): Engine.infer vs the official code's tile "
    "mode + post_proc.py per tile (needs the official hover_net code)"
)


def reference_dir(ctx: harness.BenchContext) -> Path:
    """Where the official hover_net code is looked for."""
    given = ctx.options.get("hovernet_reference") or os.environ.get("HVX_HOVERNET_REFERENCE")
    if given:
        return Path(given)
    return Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "hover_net"


def _official(ref: Path):
    """(HoVerNet class, post_proc.process) of the official code at ``ref``."""
    if not (ref / "models" / "hovernet" / "net_desc.py").is_file():
        raise FileNotFoundError(f"official hover_net code not found at {ref}")
    sys.path.insert(0, str(ref))
    try:
        net_desc = importlib.import_module("models.hovernet.net_desc")
        post_proc = importlib.import_module("models.hovernet.post_proc")
    finally:
        sys.path.remove(str(ref))
    return net_desc.HoVerNet, post_proc.process


def official_tile(net, process, img: np.ndarray, window: int, output: int, nr_types: int):
    """The official tile mode on one uint8 RGB image: network, assembly, post-processing."""
    import torch

    h, w = img.shape[:2]
    lh = (math.ceil((h - output) / output) + 1) * output
    lw = (math.ceil((w - output) / output) + 1) * output
    pt = (window - output) // 2
    padded = np.pad(img, ((pt, lh + window - h), (pt, lw + window - w), (0, 0)), "reflect")
    wins = [
        padded[y : y + window, x : x + window]
        for y in range(0, lh, output)
        for x in range(0, lw, output)
    ]
    x = torch.from_numpy(np.stack(wins)).float().permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        pred = {k: v.permute(0, 2, 3, 1) for k, v in net(x).items()}
        npp = torch.softmax(pred["np"], -1)[..., 1:]
        tpa = torch.argmax(torch.softmax(pred["tp"], -1), -1, keepdim=True).float()
        out = torch.cat([tpa, npp, pred["hv"]], -1).numpy()
    rows, cols = lh // output, lw // output
    full = out.reshape(rows, cols, output, output, 4).transpose(0, 2, 1, 3, 4)
    full = full.reshape(rows * output, cols * output, 4)[:h, :w]
    _, info = process(full, nr_types=nr_types, return_centroids=True)
    return len(info)


def run(ctx: harness.BenchContext) -> list[harness.Record]:
    """Measures each batch size; returns the official and the hvx record."""
    import torch

    from hvx.bundle import import_hovernet
    from hvx.model import create_model

    ref = reference_dir(ctx)
    try:
        official_net, process = _official(ref)
    except (ImportError, FileNotFoundError) as err:
        log.warning("hovernet stage skipped: the official code is needed (%s)", err)
        return []
    size, nr_types = 256, 6
    torch.manual_seed(0)
    model = create_model("hovernet_fast", in_chans=3, num_types=nr_types)
    state = model.state_dict()
    net = official_net(input_ch=3, nr_types=nr_types, mode="fast").eval()
    net.load_state_dict(state, strict=True)
    net = net.to(ctx.device)
    records: list[harness.Record] = []
    with tempfile.TemporaryDirectory(prefix="hvx-bench-") as tmp, torch_threads(ctx):
        ckpt = Path(tmp) / "hovernet_fast.tar"
        torch.save({"desc": {f"module.{k}": v for k, v in state.items()}}, ckpt)
        bundle = import_hovernet(ckpt, Path(tmp) / "bundle", mode="fast", types=nr_types)
        engine = load_engine(ctx, bundle, Path(tmp))
        impl = f"engine-{engine.backend}-{engine.precision}"
        for batch in sorted(set(ctx.batches)):
            tiles, source = _inputs.real_tiles(batch, size)

            def base(tiles=tiles):
                return sum(official_tile(net, process, t, 256, 164, nr_types) for t in tiles)

            found = {"official": base(), "hvx": sum(len(t) for t in engine.infer(tiles).tables)}
            b, m = paired.measure_pair(
                NAME,
                ("official-hover_net-fp32-eager+post_proc", base),
                (impl, lambda tiles=tiles: engine.infer(tiles)),
                batch,
                size,
                ctx,
            )
            extra = {
                "model": "hovernet_fast (random weights, official layout)",
                "inputs": source,
                "windows_per_tile": 4,
                "reference": str(ref),
            }
            b.extra = {**extra, "nuclei_per_tile": found["official"] / batch}
            m.extra = {
                **extra,
                **m.extra,
                "nuclei_per_tile": found["hvx"] / batch,
                "backend": engine.backend,
            }
            log.info("hovernet batch %d: %.2fx", batch, m.speedup or float("nan"))
            records += [b, m]
    return records
