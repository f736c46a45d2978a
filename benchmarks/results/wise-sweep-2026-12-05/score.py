"""Training-tile binary PQ of WiSE bundles (see RULE.md).

python score.py BUNDLE...   (from the repository root; writes train_scores.json)
"""

import json
import sys
from pathlib import Path

from hvx.training.tune import tune_postprocess

DATA = ["../shared/data/consep", "../shared/data/monuseg"]
out = {}
for path in sys.argv[1:]:
    r = tune_postprocess(path, DATA, grid={"np_threshold": (0.7,)}, backend="onnxruntime")
    cur = r["current"]["datasets"]
    out[path] = {
        "consep": cur["consep"]["pq"],
        "consep_mpq": cur["consep"]["mpq_plus"],
        "monuseg": cur["monuseg"]["pq"],
        "tiles": r["tiles"],
    }
    print(path, json.dumps(out[path]), flush=True)
Path("train_scores.json").write_text(json.dumps(out, indent=1) + "\n")
