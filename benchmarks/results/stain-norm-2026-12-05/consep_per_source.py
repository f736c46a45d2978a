"""One-off: CoNSeP validation with the stain fitted per source image instead of per tile.

    python consep_per_source.py METHOD [BUNDLE]   (from the repository root; JSON to stdout)

The 80 validation tiles (256 x 256) come from 5 images of 1000 x 1000; ``hvx-train
--evaluate --stain-norm`` fits each tile alone. Here the fit is made once on the pooled
tiles of each source image (as ``hvx slide`` fits once per slide) and applied to each.
"""

import json
import sys

import numpy as np

import hvx
from hvx.bundle import load_bundle
from hvx.metrics import conic_scores
from hvx.stain import StainNormalizer
from hvx.training.data import load_dataset
from hvx.training.evaluate import _val_indices


def main(method, bundle_path="engine/models/default"):
    bundle = load_bundle(bundle_path)
    ds = load_dataset("../shared/data/consep")
    idx = _val_indices(ds.sources, bundle)
    norm = StainNormalizer(method)
    src = np.asarray(ds.sources)[idx]
    images = ds.images[idx].copy()
    for s in sorted(set(src.tolist())):
        sel = np.flatnonzero(src == s)
        fit = norm.fit(np.concatenate(list(ds.images[idx[sel]])))
        for k in sel:
            images[k] = norm.apply(ds.images[idx[k]], fit)
    eng = hvx.Engine.load(bundle_path, backend="onnxruntime")
    pred = np.concatenate([eng.infer(images[i : i + 8]).to_conic() for i in range(0, len(idx), 8)])
    true = np.stack([ds.inst[idx], ds.cls[idx].astype(np.int32)], axis=-1)
    sc = conic_scores(true, pred, num_classes=len(bundle.class_names))
    print(
        json.dumps(
            {
                "method": method,
                "fit": "per source image",
                "tiles": len(idx),
                "pq": float(sc.pq),
                "mpq_plus": float(sc.mpq_plus),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
