"""Training-tile binary PQ of WiSE bundles (see RULE.md)."""
import json, sys
from hvx.training.tune import tune_postprocess
out = {}
for path in sys.argv[1:]:
    r = tune_postprocess(path, ["../shared/data/consep", "../shared/data/monuseg"],
                         grid={"np_threshold": (0.7,)}, backend="onnxruntime")
    cur = r["current"]
    out[path] = {"consep": cur["datasets"]["consep"]["pq"], "consep_mpq": cur["datasets"]["consep"]["mpq_plus"],
                 "monuseg": cur["datasets"]["monuseg"]["pq"], "tiles": r["tiles"]}
    print(path, json.dumps(out[path]), flush=True)
json.dump(out, open("/work/runs/wise_sweep/train_scores.json", "w"), indent=1)
