"""Bench stage ``postprocess``: C++ HV watershed vs the OpenCV/scipy/scikit-image twin.

Inputs are realistic head outputs built from real CoNSeP instance labels (when
``../shared/data/consep`` exists; synthetic discs otherwise): the HV targets of
SPEC §2 plus smooth noise, a blurred noisy foreground probability, and type
probabilities. Both implementations run on the same inputs in the same process.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from hvx import _native
from hvx.bench import harness, paired
from hvx.bench._inputs import real_tiles
from hvx.engine import Engine
from hvx.postprocess import PostprocessConfig, instances_from_hv, postprocess

NAME = "postprocess"
HELP = "HV-gradient watershed + nucleus tables, native C++ vs reference twin (CPU)"

_log = logging.getLogger(__name__)


def _find_consep() -> Path:
    """``shared/data/consep`` beside the checkout (developers and CI only)."""
    for parent in Path(__file__).resolve().parents:
        cand = parent / "shared" / "data" / "consep"
        if (cand / "labels.npz").exists():
            return cand
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "consep"


#: Where developers and CI keep the real CoNSeP tiles (absent on users' machines).
CONSEP_DIR = _find_consep()


def hv_targets(inst: np.ndarray) -> np.ndarray:
    """HV targets of SPEC §2 (every instance, hvx §7f), for benchmark inputs.

    Args:
        inst: ``ndarray[H, W]`` int instance map.

    Returns:
        ``ndarray[2, H, W] float32``: horizontal then vertical, in [-1, 1].
    """
    from scipy import ndimage as ndi

    H, W = inst.shape
    out = np.zeros((2, H, W), np.float32)
    for obj in ndi.find_objects(inst):
        if obj is None:
            continue
        r0, r1 = max(obj[0].start - 2, 0), min(obj[0].stop + 2, H)
        c0, c1 = max(obj[1].start - 2, 0), min(obj[1].stop + 2, W)
        crop = inst[r0:r1, c0:c1]
        ids = np.unique(crop[2:-2, 2:-2] if crop.shape[0] > 4 and crop.shape[1] > 4 else crop)
        for inst_id in ids[ids > 0]:
            m = crop == inst_id
            if not m.any() or m.shape[0] < 2 or m.shape[1] < 2:
                continue
            cy, cx = ndi.center_of_mass(m)
            cy, cx = int(cy + 0.5), int(cx + 0.5)
            xs = (np.arange(1, m.shape[1] + 1) - cx)[None, :].repeat(m.shape[0], 0)
            ys = (np.arange(1, m.shape[0] + 1) - cy)[:, None].repeat(m.shape[1], 1)
            for ch, g in ((0, xs.astype(np.float32)), (1, ys.astype(np.float32))):
                g = np.where(m, g, 0)
                neg, pos = g < 0, g > 0
                if neg.any():
                    g[neg] /= -g[neg].min()
                if pos.any():
                    g[pos] /= g[pos].max()
                out[ch, r0:r1, c0:c1][m] = g[m]
    return out


def head_outputs_from_labels(
    inst: np.ndarray,
    cls: np.ndarray,
    rng: np.random.Generator,
    noise: float = 0.15,
    num_types: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plausible network outputs for a labelled tile.

    Args:
        inst: ``ndarray[H, W]`` int instance map.
        cls: ``ndarray[H, W]`` int class map (< num_types).
        rng: Random generator (the outputs are deterministic given it).
        noise: Amplitude of the smooth noise added to every map.
        num_types: Type channels including background.

    Returns:
        ``(np_prob[H, W], hv[2, H, W], tp_prob[num_types, H, W])`` float32.
    """
    import cv2

    H, W = inst.shape

    def smooth_noise(shape):
        n = rng.standard_normal(shape).astype(np.float32)
        if n.ndim == 3:
            return np.stack([cv2.GaussianBlur(c, (0, 0), 2.0) * 2.0 for c in n])
        return cv2.GaussianBlur(n, (0, 0), 2.0) * 2.0

    fg = (inst > 0).astype(np.float32)
    np_prob = cv2.GaussianBlur(fg, (0, 0), 1.0) * 0.9 + 0.05 + noise * smooth_noise((H, W))
    np_prob = np.clip(np_prob, 0, 1).astype(np.float32)
    hv = hv_targets(inst)
    hv = np.stack([cv2.GaussianBlur(c, (0, 0), 0.7) + noise * smooth_noise((H, W)) for c in hv])
    logits = 3.0 * np.eye(num_types, dtype=np.float32)[np.clip(cls, 0, num_types - 1)]
    logits = np.moveaxis(logits, -1, 0) + smooth_noise((num_types, H, W)) * (1 + noise)
    e = np.exp(logits - logits.max(0, keepdims=True))
    tp = (e / e.sum(0, keepdims=True)).astype(np.float32)
    return np_prob, np.clip(hv, -1.5, 1.5).astype(np.float32), tp


def _synthetic_labels(rng: np.random.Generator, size: int, count: int = 60):
    """Touching discs (a fallback when no real labels are around)."""
    inst = np.zeros((size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    for k in range(1, count + 1):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(4, 11)
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    cls = np.where(inst > 0, (inst % 4) + 1, 0)
    return inst, cls


def realistic_batch(n: int, size: int = 256, seed: int = 0, min_nuclei: int = 50):
    """``n`` head-output tiles from real CoNSeP labels with >= min_nuclei nuclei.

    Returns:
        ``(np_prob[N, S, S], hv[N, 2, S, S], tp[N, 5, S, S], source)`` where source
        says where the labels came from.
    """
    rng = np.random.default_rng(seed)
    labels = []
    source = "synthetic discs"
    if (CONSEP_DIR / "labels.npz").exists():
        with np.load(CONSEP_DIR / "labels.npz") as z:
            inst_all, cls_all = z["inst"], z["cls"]
        counts = np.array([len(np.unique(x)) - 1 for x in inst_all])
        pick = np.flatnonzero(counts >= min_nuclei)
        rng.shuffle(pick)
        for i in pick[:n]:
            labels.append((inst_all[i][:size, :size], cls_all[i][:size, :size]))
        source = f"CoNSeP tiles (>= {min_nuclei} nuclei), {CONSEP_DIR}"
    while len(labels) < n:
        labels.append(_synthetic_labels(rng, size))
    outs = [head_outputs_from_labels(i, c, rng) for i, c in labels[:n]]
    return (
        np.stack([o[0] for o in outs]),
        np.stack([o[1] for o in outs]),
        np.stack([o[2] for o in outs]),
        source,
    )


def predicted_batch(n: int, size: int = 256, bundle=None):
    """Head outputs of a trained model on real tiles: what post-processing sees in use.

    Runs the bundle (default: the shipped default model) in fp32 ONNX Runtime on
    ``n`` real tiles (CoNSeP when present, else the packaged samples, repeated).

    Returns:
        ``(np_prob[N, S, S], hv[N, 2, S, S], tp[N, C, S, S], source, postprocess_config)``.
    """
    engine = Engine.load(bundle, backend="onnxruntime", device="cpu", precision="fp32")
    tiles, where = real_tiles(n, size)
    heads, _ = engine.heads(tiles)
    h = heads.numpy()
    source = f"{Path(engine.source).name} model fp32 predictions on {where}"
    return h.np_prob, h.hv, h.tp_prob, source, engine.postprocess_config


def _reference_batch(np_prob, hv, tp, config=None):
    """The twin on one thread (OpenCV's own threads off), tile by tile."""
    import cv2

    from hvx._postprocess_ref import instance_table_ref, instances_from_hv_ref

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        labels = np.argmax(tp, axis=1)
        for i in range(np_prob.shape[0]):
            inst = instances_from_hv_ref(np_prob[i], hv[i], config)
            instance_table_ref(inst, labels[i])
    finally:
        cv2.setNumThreads(before)


def agreement(np_prob: np.ndarray, hv: np.ndarray, config) -> dict:
    """Whether the native instance maps equal the twin's on every tile, and what they hold.

    Args:
        np_prob: ``ndarray[N, H, W] float32`` foreground probabilities.
        hv: ``ndarray[N, 2, H, W] float32`` HV maps.
        config: The ``PostprocessConfig`` both sides use.

    Returns:
        ``{"native_equals_reference": bool (every tile bit-identical),
        "nuclei_per_tile": float, "foreground_fraction": float, "tiles_checked": int}``
        (nuclei and foreground of the native maps, means over the tiles).
    """
    from hvx._postprocess_ref import instances_from_hv_ref

    same, nuclei, fg = True, [], []
    for a, h in zip(np_prob, hv, strict=True):
        inst = instances_from_hv(a, h, config)
        same = same and np.array_equal(inst, instances_from_hv_ref(a, h, config))
        nuclei.append(len(np.unique(inst)) - 1)
        fg.append(float((inst > 0).mean()))
    return {
        "native_equals_reference": bool(same),
        "nuclei_per_tile": float(np.mean(nuclei)),
        "foreground_fraction": float(np.mean(fg)),
        "tiles_checked": len(nuclei),
    }


def run(ctx: harness.BenchContext) -> list[harness.Record]:
    """Native (1 and 2 threads) against the reference, paired and interleaved.

    Two input sets, reported apart: ``synthetic`` (real CoNSeP labels turned into
    head outputs plus smooth noise) and ``predicted`` (the default model's fp32
    heads on real tiles). Each round runs reference, native-1t, native-2t in turn;
    speed-ups are the per-round ratio's median (p25-p75 in ``extra``).
    """
    records: list[harness.Record] = []
    batches = sorted(set(ctx.batches))
    inputs = {"synthetic": (*realistic_batch(max(batches), ctx.size), PostprocessConfig())}
    try:
        inputs["predicted"] = predicted_batch(max(batches), ctx.size)
    except (FileNotFoundError, ImportError, ValueError) as err:
        _log.warning("postprocess: no predicted inputs (%s)", err)
    for kind, (np_prob, hv, tp, source, config) in inputs.items():
        _log.info("postprocess inputs (%s): %s", kind, source)
        check = agreement(np_prob, hv, config)
        for b in batches:
            args = (np_prob[:b], hv[:b], tp[:b])
            fns = {"reference": lambda a=args, c=config: _reference_batch(*a, c)}
            for threads in sorted({1, min(2, _native.max_threads())}):
                fns[f"native-{threads}t"] = lambda a=args, n=threads, c=config: postprocess(
                    *a, c, num_threads=n
                )
            times = paired.interleaved(fns, ctx.repeats, warmup=ctx.warmup)
            for impl, secs in times.items():
                threads = 1 if impl == "reference" else int(impl.split("-")[1][:-1])
                extra = {"threads": threads, "inputs": kind, "source": source, **check}
                fields = {}
                if impl != "reference":
                    ratio = paired.paired_ratio(times["reference"], secs)
                    extra["paired_ratio"] = ratio
                    fields = {"baseline": "reference", "speedup": ratio["median"]}
                records.append(
                    harness.Record(
                        NAME, impl, b, ctx.size, paired.timing(secs), extra=extra, **fields
                    )
                )
    return records
