"""One-off: does Reinhard LAB normalisation help the default model on MoNuSeg validation?

    python reinhard.py [BUNDLE]   (from the repository root; writes JSON to stdout)

Target statistics: OpenCV float LAB mean/std over every 4th CoNSeP training tile.
Each MoNuSeg validation image (whole 1000x1000, one pass, fp32 ONNX Runtime) is run
raw and normalised to them (per-image LAB mean/std); binary PQ against the labels.
"""

import csv
import json
import sys

import cv2
import numpy as np

import hvx
from hvx.metrics import pq_stats

VAL = [
    "TCGA-DK-A2I6-01A-01-TS1",
    "TCGA-AR-A1AS-01Z-00-DX1",
    "TCGA-21-5786-01Z-00-DX1",
    "TCGA-HE-7128-01Z-00-DX1",
    "TCGA-50-5931-01Z-00-DX1",
    "TCGA-G9-6356-01Z-00-DX1",
]


def lab(img):
    return cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def stats(imgs):
    px = np.concatenate([lab(i).reshape(-1, 3) for i in imgs])
    return px.mean(0), px.std(0)


def reinhard(img, tm, ts):
    x = lab(img).reshape(-1, 3)
    out = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6) * ts + tm
    rgb = cv2.cvtColor(out.reshape(img.shape).astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def read(path):
    return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


def main(bundle):
    with open("../shared/data/consep/index.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    tm, ts = stats([read(f"../shared/data/consep/images/{r['name']}.png") for r in rows[::4]])
    z = np.load("../shared/data/monuseg/labels.npz")
    names, inst = list(z["names"]), z["inst"]
    eng = hvx.Engine.load(bundle, backend="onnxruntime", precision="fp32")
    res = {}
    for n in VAL:
        img, gt = read(f"../shared/data/monuseg/images/{n}.png"), inst[names.index(n)]
        for mode, x in (("raw", img), ("reinhard", reinhard(img, tm, ts))):
            pred = np.asarray(eng.infer(x).inst)[0]
            res.setdefault(mode, []).append(pq_stats(gt, pred).pq)
    report = {"bundle": bundle, "target_mean": tm.tolist(), "target_std": ts.tolist()}
    for k, v in res.items():
        report[k] = {"mean_pq": float(np.mean(v)), "per_image": [round(float(p), 4) for p in v]}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "engine/models/default")
