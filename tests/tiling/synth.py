"""Synthetic large images for the tiling tests: mosaics of real CoNSeP tiles.

The "engine" here is an oracle: it returns the label maps under each tile, so
tiled inference must reproduce the mosaic's labels exactly (the stitching logic
is what is tested, not a network).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import cv2
import numpy as np


def mosaic(consep_dir: Path, rows: int, cols: int, *, seed: int = 0, scale: float = 1.0):
    """A (rows*256, cols*256) mosaic of real tiles: image uint8, inst int32, cls uint8."""
    data = np.load(consep_dir / "labels.npz")
    names, inst_all, cls_all = data["names"], data["inst"], data["cls"]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(names), rows * cols, replace=len(names) < rows * cols)
    image = np.zeros((rows * 256, cols * 256, 3), np.uint8)
    inst = np.zeros((rows * 256, cols * 256), np.int32)
    cls = np.zeros((rows * 256, cols * 256), np.uint8)
    nxt = 0
    for k, i in enumerate(pick):
        r, c = divmod(k, cols)
        sl = np.s_[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256]
        bgr = cv2.imread(str(consep_dir / "images" / f"{names[i]}.png"), cv2.IMREAD_COLOR)
        image[sl] = bgr[..., ::-1]
        t = inst_all[i]
        inst[sl] = np.where(t > 0, t + nxt, 0)
        cls[sl] = cls_all[i]
        nxt += int(t.max())
    if scale != 1.0:
        h, w = round(image.shape[0] * scale), round(image.shape[1] * scale)
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        inst = cv2.resize(inst, (w, h), interpolation=cv2.INTER_NEAREST)
        cls = cv2.resize(cls, (w, h), interpolation=cv2.INTER_NEAREST)
    return image, inst, cls


@dataclasses.dataclass
class Table:
    """A NucleusTable look-alike computed from label maps (test oracle only)."""

    id: np.ndarray
    type: np.ndarray
    type_prob: np.ndarray
    centroid: np.ndarray
    bbox: np.ndarray
    area: np.ndarray
    contours: list

    def __len__(self):
        return len(self.id)


def table_from_maps(inst: np.ndarray, cls: np.ndarray) -> Table:
    import scipy.ndimage as ndi

    ids = np.unique(inst)
    ids = ids[ids > 0].astype(np.int32)
    rows = dict(type=[], centroid=[], bbox=[], area=[], contours=[])
    slices = ndi.find_objects(inst)
    for i in ids:
        sl = slices[i - 1]
        m = inst[sl] == i
        rr, cc = np.nonzero(m)
        rows["area"].append(len(rr))
        rows["centroid"].append((rr.mean() + sl[0].start, cc.mean() + sl[1].start))
        rows["bbox"].append((sl[0].start, sl[1].start, sl[0].stop, sl[1].stop))
        rows["type"].append(int(np.bincount(cls[sl][m]).argmax()))
        cs, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        c = max(cs, key=len).reshape(-1, 2) + np.array([sl[1].start, sl[0].start])
        rows["contours"].append(c.astype(np.int32))
    return Table(
        id=ids,
        type=np.array(rows["type"], np.int32),
        type_prob=np.ones(len(ids), np.float32),
        centroid=np.array(rows["centroid"], np.float64).reshape(-1, 2),
        bbox=np.array(rows["bbox"], np.int32).reshape(-1, 4),
        area=np.array(rows["area"], np.int64),
        contours=rows["contours"],
    )


def relabel(inst: np.ndarray) -> np.ndarray:
    """Ids 1..k in order of first appearance (compare label maps up to renaming)."""
    flat = inst.ravel()
    ids, first = np.unique(flat, return_index=True)
    order = ids[np.argsort(first)]
    order = order[order > 0]
    lut = np.zeros(int(flat.max()) + 1 if flat.size else 1, np.int32)
    lut[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return lut[inst]


@dataclasses.dataclass
class Result:
    inst: np.ndarray
    type: np.ndarray
    tables: list

    def __len__(self):
        return len(self.tables)


class OracleEngine:
    """Returns the labels under each tile it is given (tiles found by content hash)."""

    def __init__(self, image, inst, cls, tile, pad_value=255):
        self.inst, self.cls, self.tile = inst, cls, tile
        self.model_mpp = 0.25
        self.class_names = ("misc", "inflammatory", "epithelial", "spindle")
        self.class_colors = ((200, 200, 200), (255, 0, 0), (0, 160, 0), (0, 0, 255))
        self._where: dict[bytes, tuple[int, int]] = {}
        self._image = image
        self._pad = pad_value
        self.calls = 0

    def _key(self, t):
        return hashlib.sha1(np.ascontiguousarray(t).tobytes()).digest()

    def locate(self, y, x):
        t = self.tile
        crop = np.full((t, t, 3), self._pad, np.uint8)
        src = self._image[y : y + t, x : x + t]
        crop[: src.shape[0], : src.shape[1]] = src
        self._where[self._key(crop)] = (y, x)

    def infer(self, batch):
        self.calls += 1
        out_i, out_c, tables = [], [], []
        t = self.tile
        for img in batch:
            y, x = self._where[self._key(img)]
            ci = np.zeros((t, t), np.int32)
            cc = np.zeros((t, t), np.uint8)
            si = self.inst[y : y + t, x : x + t]
            ci[: si.shape[0], : si.shape[1]] = si
            cc[: si.shape[0], : si.shape[1]] = self.cls[y : y + t, x : x + t]
            ci = relabel(ci)
            out_i.append(ci)
            out_c.append(cc)
            tables.append(table_from_maps(ci, cc))
        return Result(np.stack(out_i), np.stack(out_c).astype(np.uint8), tables)


def random_blobs(h: int, w: int, n: int, max_radius: int, seed: int = 0):
    """Label maps of random, non-overlapping ellipses: inst int32, cls uint8."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    inst = np.zeros((h, w), np.int32)
    cls = np.zeros((h, w), np.uint8)
    k = 0
    r = max_radius + 1
    for _ in range(n):
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        ry, rx = (int(v) for v in rng.integers(2, max_radius + 1, 2))
        y0, x0 = max(cy - r, 0), max(cx - r, 0)
        win = np.s_[y0 : cy + r + 1, x0 : cx + r + 1]
        m = np.zeros(inst[win].shape, np.uint8)
        cv2.ellipse(m, (cx - x0, cy - y0), (rx, ry), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        m = m.astype(bool) & (inst[win] == 0)
        if m.sum() < 5:
            continue
        lab, nlab = ndi.label(m)
        if nlab > 1:  # keep the largest piece: one connected nucleus
            m = lab == (np.bincount(lab.ravel())[1:].argmax() + 1)
        k += 1
        inst[win][m] = k
        cls[win][m] = int(rng.integers(1, 5))
    return inst, cls


def oracle_tile(inst, cls, y0, x0, tile, jitter=None):
    """The labels under one tile (relabelled), padded, and their table."""
    ci = np.zeros((tile, tile), np.int32)
    cc = np.zeros((tile, tile), np.uint8)
    si = inst[y0 : y0 + tile, x0 : x0 + tile]
    ci[: si.shape[0], : si.shape[1]] = si
    cc[: si.shape[0], : si.shape[1]] = cls[y0 : y0 + tile, x0 : x0 + tile]
    if jitter is not None:  # per-tile disagreement: grow or shrink nuclei by 1 px
        ci = jitter(ci)
        sizes = np.bincount(ci.ravel())
        ci[sizes[ci] < 10] = 0  # as post-processing's min_object_size does
    ci = relabel(ci)
    cc[ci == 0] = 0
    return ci, table_from_maps(ci, cc)


def stitch_all(plan, inst, cls, scheduled=None, jitter=None, stitcher=None, start=0, stop=None):
    """Runs a Stitcher over a plan with oracle tiles; returns (label map, nuclei list, stitcher)."""
    from hvx.tiling import Stitcher

    st = stitcher or Stitcher(plan, scheduled)
    out = np.zeros(inst.shape, np.int32)
    got = []
    todo = [i for i in (scheduled if scheduled is not None else range(len(plan))) if i >= start]
    for i in todo[:stop]:
        t = plan.tile_at(i)
        ci, tab = oracle_tile(inst, cls, t.y0, t.x0, plan.tile, jitter)
        got.append(st.add_tile(i, ci, tab))
    if stop is None:
        got.append(st.finish())
    for nu in got:
        for g, b, m in zip(nu.id, nu.bbox, nu.masks, strict=True):
            v = out[b[0] : b[2], b[1] : b[3]]
            v[m & (v == 0)] = g
    return out, got, st
