"""WiSE-FT of the 2026-12-05 default: average the fine-tuned weights with the parent's, fp16-safe.

    python wise.py FINETUNED_BUNDLE ALPHA OUT_BUNDLE PARENT_BUNDLE

theta = (1 - alpha) * theta_parent + alpha * theta_finetuned for every float tensor
(BatchNorm statistics too), then hvx.model._net.rebalance_for_fp16; metadata (classes,
pre/post-processing, provenance, metrics) from the fine-tuned bundle. The parent is the
previous default: `git archive 7b1ba91 engine/models/default | tar -x -C /tmp/parent`.
"""

import sys

from hvx.bundle import load_bundle, save_bundle
from hvx.model._net import rebalance_for_fp16

ft, alpha, out, parent = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
meta = load_bundle(ft)
base = load_bundle(parent).build_model("cpu").state_dict()
sd = meta.build_model("cpu").state_dict()
mix = {
    k: ((1 - alpha) * base[k].float() + alpha * v.float()).to(v.dtype)
    if v.is_floating_point()
    else v
    for k, v in sd.items()
}
model = meta.build_model("cpu")
model.load_state_dict(mix)
model.eval()
changed = rebalance_for_fp16(model)
prov = {
    **meta.provenance,
    "wise_ft": {"alpha": alpha, "parent": "engine/models/default at git 7b1ba91", "finetuned": ft},
    "fp16_rebalanced": changed,
}
save_bundle(
    out,
    model,
    class_names=meta.class_names,
    class_colors=meta.class_colors,
    mpp=meta.mpp,
    preprocess=meta.preprocess,
    postprocess=meta.postprocess,
    provenance=prov,
    metrics=meta.metrics,
)
print(out, "rebalanced", changed)
