"""Deterministic corpus of post-processing inputs: C++ vs reference agreement.

Every case is ``(name, np_prob[H, W] f32, hv[2, H, W] f32, types[H, W] int32)``,
generated from a fixed seed so the corpus is the same on every machine.
"""

from __future__ import annotations

import cv2
import numpy as np

from hvx.bench.postprocess import head_outputs_from_labels, hv_targets


def _smooth(rng, shape, sigma):
    n = rng.standard_normal(shape).astype(np.float32)
    if min(shape) < 2 or sigma <= 0:
        return n
    return cv2.GaussianBlur(n, (0, 0), sigma)


def _types(rng, shape, num_types=5):
    return rng.integers(0, num_types, shape).astype(np.int32)


def smooth_fields(rng, h, w):
    """Smooth random np and hv fields (no nuclei structure at all)."""
    np_prob = 1 / (1 + np.exp(-4 * _smooth(rng, (h, w), 3) / 0.3))
    hv = np.stack([_smooth(rng, (h, w), 4), _smooth(rng, (h, w), 4)])
    return np_prob.astype(np.float32), hv.astype(np.float32), _types(rng, (h, w))


def nuclei_scene(rng, h, w, count, noise):
    """Touching discs and ellipses plus tiny objects, HV targets + noise."""
    inst = np.zeros((h, w), np.int32)
    yy, xx = np.mgrid[:h, :w]
    k = 0
    for _ in range(count):
        k += 1
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(2.5, 10, 2)
        inst[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = k
    for _ in range(rng.integers(0, 6)):  # tiny objects (< min size) and 1-px lines
        k += 1
        y, x = rng.integers(0, h), rng.integers(0, w)
        if rng.random() < 0.5:
            inst[y : y + rng.integers(1, 3), x : x + rng.integers(1, 4)] = k
        else:
            inst[y, x : x + rng.integers(3, 15)] = k
    cls = np.where(inst > 0, inst % 4 + 1, 0)
    np_prob, hv, tp = head_outputs_from_labels(inst, cls, rng, noise=noise)
    return np_prob, hv, np.argmax(tp, axis=0).astype(np.int32)


def special_cases(rng):
    """Constant, empty, full and odd-sized maps."""
    cases = []
    for h, w in [(1, 1), (1, 7), (7, 1), (2, 2), (3, 3), (7, 300), (300, 7), (31, 33), (257, 255)]:
        cases.append((f"odd-{h}x{w}", *smooth_fields(rng, h, w)))
    for h, w in [(1, 1), (16, 16), (64, 48)]:
        cases.append(
            (
                f"background-{h}x{w}",
                np.zeros((h, w), np.float32),
                np.zeros((2, h, w), np.float32),
                np.zeros((h, w), np.int32),
            )
        )
        cases.append(
            (
                f"foreground-const-{h}x{w}",
                np.ones((h, w), np.float32),
                np.full((2, h, w), 0.3, np.float32),
                np.ones((h, w), np.int32),
            )
        )
        np_prob, hv, t = smooth_fields(rng, h, w)
        cases.append((f"foreground-random-hv-{h}x{w}", np.ones((h, w), np.float32), hv, t))
    for v in (0.49, 0.5, 0.51):
        cases.append(
            (
                f"constant-np-{v}",
                np.full((40, 40), v, np.float32),
                _smooth(rng, (2, 40, 40), 0).clip(-1, 1),
                _types(rng, (40, 40)),
            )
        )
    # Quantised maps: many exact ties and plateaus in the relief.
    for i in range(6):
        np_prob, hv, t = nuclei_scene(rng, 64, 64, 12, 0.05)
        q = 2.0 ** -(2 + i)
        cases.append(
            (
                f"quantised-{i}",
                np.round(np_prob / q) * q,
                (np.round(hv / q) * q).astype(np.float32),
                t,
            )
        )
    # Exact HV targets (no noise): symmetric shapes, symmetric relief.
    for i in range(4):
        inst = np.zeros((48, 48), np.int32)
        yy, xx = np.mgrid[:48, :48]
        for k, (cy, cx, r) in enumerate([(14, 14, 7), (14, 28, 7), (32, 20, 9), (33, 38, 4 + i)]):
            inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k + 1
        cases.append(
            (
                f"exact-targets-{i}",
                (inst > 0).astype(np.float32),
                hv_targets(inst),
                np.where(inst > 0, inst % 3 + 1, 0).astype(np.int32),
            )
        )
    return cases


def synthetic_corpus(n_smooth=50, n_scenes=130, seed=1234):
    """Smooth fields, nuclei scenes and special cases (>= 200 tiles by default)."""
    rng = np.random.default_rng(seed)
    cases = special_cases(rng)
    for i in range(n_smooth):
        h, w = (int(v) for v in rng.integers(8, 97, 2))
        cases.append((f"smooth-{i}", *smooth_fields(rng, h, w)))
    for i in range(n_scenes):
        h, w = (int(v) for v in rng.integers(24, 129, 2))
        count = int(h * w / 250)
        cases.append((f"scene-{i}", *nuclei_scene(rng, h, w, count, float(rng.uniform(0, 0.3)))))
    return cases


def consep_corpus(consep_dir, n=40, seed=99):
    """Head outputs built from real CoNSeP labels (SPEC §2 HV recipe + noise)."""
    rng = np.random.default_rng(seed)
    with np.load(consep_dir / "labels.npz") as z:
        inst_all, cls_all = z["inst"], z["cls"]
    pick = rng.choice(len(inst_all), size=n, replace=False)
    cases = []
    for j, i in enumerate(pick):
        np_prob, hv, tp = head_outputs_from_labels(
            inst_all[i], cls_all[i], rng, noise=float(rng.uniform(0.05, 0.3))
        )
        cases.append((f"consep-{j}", np_prob, hv, np.argmax(tp, axis=0).astype(np.int32)))
    return cases
