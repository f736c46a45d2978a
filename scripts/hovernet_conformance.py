"""One-off: hvx's HoVer-Net against the official code itself, on real images.

Runs the official network (``../shared/reference/hover_net``, imported from there,
never from hvx) with random weights and randomised BatchNorm statistics, in the
official tile mode (re-implemented here from the official ``infer/tile.py``:
reflect padding, windows stepped by the output size, ``infer_step``'s softmax /
argmax, assembly, crop), and the official ``post_proc.process`` on its heads.
The same weights go through ``hvx import-hovernet`` (official ``.tar`` layout
with the ``module.`` prefix) and ``hvx.Engine``; the script records, per mode and
image, the max abs difference of each head and whether hvx's instance maps equal
the official ones.

Needs matplotlib (imported by the official utils): ``pip install matplotlib``.
Not a test (it reads the reference code); results go to
``benchmarks/results/hovernet-conformance-<date>.json`` and docs/hovernet.md.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/hovernet_conformance.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT.parent / "shared" / "reference" / "hover_net"
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(REF))

from models.hovernet.net_desc import HoVerNet as OfficialNet  # noqa: E402
from models.hovernet.post_proc import process as official_process  # noqa: E402

WINDOWS = {"fast": (256, 164), "original": (270, 80)}


def randomise(net: torch.nn.Module, seed: int, img: np.ndarray, window: int) -> None:
    """Random conv weights (the official init); BatchNorm statistics randomised around real ones.

    Purely random statistics make the activations of a 50-layer network grow to
    ~1e4 (as no trained network's do), where float32 rounding alone moves the
    outputs by ~1e-2. So the statistics are first measured on one real window
    (one forward in training mode, cumulative averages), then perturbed:
    variance x U(0.7, 1.4), mean + 0.1 sd N(0, 1), and random affine parameters.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    h, w = img.shape[:2]
    pad = np.pad(img, ((0, max(0, window - h)), (0, max(0, window - w)), (0, 0)), "reflect")
    x = torch.from_numpy(np.ascontiguousarray(pad[:window, :window])).float()
    net.train()
    with torch.no_grad():
        net(x.permute(2, 0, 1)[None])
    net.eval()
    with torch.no_grad():
        for m in bns:
            c = m.num_features
            sd = m.running_var.sqrt()
            m.running_var.mul_(0.7 + 0.7 * torch.rand(c, generator=g))
            m.running_mean.add_(0.1 * sd * torch.randn(c, generator=g))
            m.weight.copy_(0.5 + torch.rand(c, generator=g))
            m.bias.copy_(0.1 * torch.randn(c, generator=g))
            m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))


def official_tile_mode(net, img: np.ndarray, window: int, output: int, batch: int = 8):
    """The official tile mode on one RGB uint8 image -> (tp argmax, np, hv, tp softmax)."""
    h, w = img.shape[:2]

    def last(length):  # official get_last_steps
        n = math.ceil((length - output) / output)
        return int((n + 1) * output)

    lh, lw = last(h), last(w)
    pt = (window - output) // 2
    padded = np.pad(img, ((pt, lh + window - h), (pt, lw + window - w), (0, 0)), "reflect")
    coords = [(y, x) for y in range(0, lh, output) for x in range(0, lw, output)]
    outs = []
    for s in range(0, len(coords), batch):
        patches = np.stack(
            [padded[y : y + window, x : x + window] for y, x in coords[s : s + batch]]
        )
        x = torch.from_numpy(patches).float().permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():  # official infer_step, plus the tp softmax kept for comparison
            pred = {k: v.permute(0, 2, 3, 1).contiguous() for k, v in net(x).items()}
            npp = torch.softmax(pred["np"], dim=-1)[..., 1:]
            tps = torch.softmax(pred["tp"], dim=-1)
            tpa = torch.argmax(tps, dim=-1, keepdim=True).float()
            outs.append(torch.cat([tpa, npp, pred["hv"], tps], -1).numpy())
    out = np.concatenate(outs)
    rows, cols = lh // output, lw // output
    full = out.reshape(rows, cols, output, output, -1).transpose(0, 2, 1, 3, 4)
    full = full.reshape(rows * output, cols * output, -1)[:h, :w]
    return full[..., 0], full[..., 1], full[..., 2:4], full[..., 4:]


def relabel(inst: np.ndarray) -> np.ndarray:
    """Ids renumbered 1.. in raster order of first appearance (label-permutation free)."""
    flat = inst.ravel()
    ids, first = np.unique(flat, return_index=True)
    order = ids[np.argsort(first)]
    order = order[order != 0]
    lut = np.zeros(int(flat.max()) + 1, dtype=np.int64)
    lut[order] = np.arange(1, len(order) + 1)
    return lut[inst]


def images(mode: str, quick: bool) -> list[tuple[str, np.ndarray]]:
    """Real tiles: CoNSeP 256 x 256 and an odd-sized MoNuSeg crop (fewer windows for original)."""
    import cv2

    out = []
    consep = sorted((DATA / "consep" / "images").glob("*.png"))
    for p in consep[:1]:
        out.append((f"consep/{p.name}", cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)))
    for p in sorted((DATA / "monuseg" / "images").glob("*.png"))[:1]:
        img = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        big = mode == "fast" and not quick  # original: 95-px margins, 80-px steps: costly
        crop = img[100:433, 200:601] if big else img[100:251, 200:371]  # odd sizes
        out.append((f"monuseg/{p.name}[crop {crop.shape[0]}x{crop.shape[1]}]", crop))
    if not out:
        raise SystemExit(f"no images under {DATA}")
    return out


def calibrate_np(net, img: np.ndarray, window: int) -> None:
    """Shifts the np head's bias so ~30% of a window is foreground (many separate blobs)."""
    x = torch.from_numpy(np.ascontiguousarray(img[:window, :window])).float()
    x = x.permute(2, 0, 1)[None]
    if x.shape[-1] < window or x.shape[-2] < window:
        return
    with torch.no_grad():
        logit = net(x)["np"]
        shift = float(torch.quantile((logit[:, 1] - logit[:, 0]).flatten(), 0.7))
        net.decoder["np"].u0.conv.bias[1] -= shift


def compare(net, engine, name: str, img: np.ndarray, nr_types: int) -> dict:
    """Official tile mode + post_proc vs hvx heads / infer on one image."""
    from hvx.postprocess import postprocess

    window, output = engine.valid_window
    t0 = time.perf_counter()
    tpa, npo, hvo, tps = official_tile_mode(net, img, window, output)
    t1 = time.perf_counter()
    heads = engine.heads(img)[0].numpy()
    t2 = time.perf_counter()
    hnp, hhv = heads.np_prob[0], heads.hv[0].transpose(1, 2, 0)
    htp = heads.tp_prob[0].transpose(1, 2, 0)
    pred_map = np.concatenate([tpa[..., None], npo[..., None], hvo], -1)
    off_inst, off_info = official_process(pred_map, nr_types=nr_types)
    mine = engine.infer(img).inst[0]
    # hvx's post-processing on the official heads isolates the network from the C++ code
    on_off = postprocess(
        npo[None], hvo.transpose(2, 0, 1)[None].copy(), tps.transpose(2, 0, 1)[None].copy()
    ).inst[0]
    row = {
        "image": name,
        "shape": list(img.shape[:2]),
        "windows": int(math.ceil(img.shape[0] / output) * math.ceil(img.shape[1] / output)),
        "official_max_abs": {"hv": float(np.abs(hvo).max())},
        "max_abs_diff": {
            "np_prob": float(np.abs(hnp - npo).max()),
            "hv": float(np.abs(hhv - hvo).max()),
            "tp_prob": float(np.abs(htp - tps).max()),
        },
        "tp_argmax_mismatch_pixels": int((htp.argmax(-1) != tpa.astype(np.int64)).sum()),
        "official_instances": len(off_info),
        "hvx_instances": int(len(np.unique(mine)) - 1),
        "inst_identical_hvx_end_to_end": bool(np.array_equal(mine, off_inst)),
        "inst_identical_after_relabel": bool(np.array_equal(relabel(mine), relabel(off_inst))),
        "inst_identical_hvx_postproc_on_official_heads": bool(np.array_equal(on_off, off_inst)),
        "seconds_official_network": round(t1 - t0, 2),
        "seconds_hvx_heads": round(t2 - t1, 2),
    }
    print(json.dumps(row), flush=True)
    return row


def blobs(h: int = 200, w: int = 230) -> np.ndarray:
    """A synthetic tile of dark blobs on a light background (gives instances, see run_mode)."""
    yy, xx = np.mgrid[:h, :w]
    dark = (np.sin(yy / 6.0) * np.sin(xx / 6.0)) > 0.5
    return np.repeat((255 - 120 * dark)[..., None], 3, 2).astype(np.uint8)


def run_mode(mode: str, imgs, seed: int, tmp: Path, head_scale: float = 1.0) -> dict:
    """Official vs hvx for one mode: real images, then a forced-foreground twin on blobs.

    Random weights give flat, noisy heads: on real images the official
    post-processing finds few or no nuclei in them. The twin (np head biased to
    foreground everywhere) on a synthetic blob tile gives instances, so the
    instance-map comparison is not vacuous.
    """
    from hvx import Engine
    from hvx.bundle import import_hovernet

    window, output = WINDOWS[mode]
    nr_types = 6 if mode == "fast" else 5
    blob_size = (200, 230) if mode == "fast" else (150, 150)
    torch.manual_seed(seed)
    net = OfficialNet(input_ch=3, nr_types=nr_types, mode=mode).eval()
    randomise(net, seed, imgs[0][1], window)
    with torch.no_grad():  # trained networks' heads are O(1-10); random ones reach ~1e3
        for branch in net.decoder.values():
            branch.u0.conv.weight.mul_(head_scale)
            branch.u0.conv.bias.mul_(head_scale)
    calibrate_np(net, imgs[0][1], window)
    rows = []
    for label, bias in (("random", None), ("forced_foreground", (-20.0, 20.0))):
        if bias is not None:
            with torch.no_grad():
                net.decoder["np"].u0.conv.bias.copy_(torch.tensor(bias))
        ckpt = tmp / f"hovernet_{mode}_{label}.tar"
        torch.save({"desc": {f"module.{k}": v for k, v in net.state_dict().items()}}, ckpt)
        bundle = import_hovernet(ckpt, tmp / f"bundle_{mode}_{label}", mode=mode, types=nr_types)
        engine = Engine.load(bundle, backend="torch", device="cpu")
        todo = imgs if bias is None else [("synthetic blobs", blobs(*blob_size))]
        for name, img in todo:
            rows.append({"weights": label, **compare(net, engine, name, img, nr_types)})
    return {
        "mode": mode,
        "window": window,
        "output": output,
        "nr_types": nr_types,
        "head_scale": head_scale,
        "rows": rows,
    }


def default_model_postproc(imgs) -> list[dict]:
    """The trained default model's heads on the real images: official post_proc vs hvx."""
    from hvx import Engine
    from hvx.postprocess import postprocess

    engine = Engine.load(backend="torch", device="cpu")
    out = []
    for name, img in imgs:
        h = engine.heads(img)[0].numpy()
        tpa = h.tp_prob[0].argmax(0).astype(np.float32)
        pred = np.stack([tpa, h.np_prob[0], h.hv[0, 0], h.hv[0, 1]], -1)
        off, info = official_process(pred, nr_types=int(h.tp_prob.shape[1]))
        mine = postprocess(h.np_prob, h.hv, h.tp_prob).inst[0]
        out.append(
            {
                "image": name,
                "official_instances": len(info),
                "hvx_instances": int(len(np.unique(mine)) - 1),
                "inst_identical": bool(np.array_equal(mine, off)),
            }
        )
        print(json.dumps(out[-1]), flush=True)
    return out


def main() -> int:
    """Runs the modes, writes the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer and smaller images")
    ap.add_argument("--modes", default="fast,original")
    ap.add_argument("--seed", type=int, default=22)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--head-scale",
        type=float,
        default=1.0,
        help="multiply the final 1x1 convolution of each head (bring outputs to O(1-10))",
    )
    ap.add_argument("--no-default-model", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    date = dt.date.today().isoformat()
    out = args.out or ROOT / "benchmarks" / "results" / f"hovernet-conformance-{date}.json"
    with tempfile.TemporaryDirectory() as tmp:
        modes = [
            run_mode(m, images(m, args.quick), args.seed, Path(tmp), args.head_scale)
            for m in args.modes.split(",")
        ]
    postproc = [] if args.no_default_model else default_model_postproc(images("fast", args.quick))
    import cv2
    import scipy
    import skimage

    from hvx._version import __version__
    from hvx.features import machine_summary
    from hvx.provenance import write_json

    doc = {
        "what": "hvx HoVer-Net (import-hovernet + Engine.heads/infer, torch CPU fp32) vs the "
        "official hover_net code (net_desc.HoVerNet, tile mode as infer/tile.py, "
        "post_proc.process), random weights with randomised BatchNorm statistics",
        "date": date,
        "machine": machine_summary(),
        "versions": {
            "hvx": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "opencv": cv2.__version__,
            "scipy": scipy.__version__,
            "scikit-image": skimage.__version__,
            "python": platform.python_version(),
        },
        "reference": str(REF),
        "seed": args.seed,
        "modes": modes,
        "default_model_postprocess": postproc,
    }
    write_json(out, doc)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
