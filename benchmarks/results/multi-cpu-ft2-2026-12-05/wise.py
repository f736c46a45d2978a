"""WiSE-FT for the second 2026-12-05 fine-tune: average fine-tuned and parent weights, fp16-safe.

    python wise.py RUN_DIR ALPHA OUT_BUNDLE PARENT_BUNDLE [PARENT_LABEL]

theta = (1 - alpha) * theta_parent + alpha * theta_finetuned for every float tensor
(BatchNorm statistics too), then hvx.model._net.rebalance_for_fp16. The fine-tuned
weights are read from RUN_DIR/checkpoints/best.safetensors (the ``model/`` tensors), not
from RUN_DIR/bundle: the bundle writer rescaled three decoder conv -> BatchNorm pairs
per channel (``rebalance_for_fp16``, same function), which would put the two models'
parameters on different scales; the checkpoint shares the parent's. Metadata
(classes, pre/post-processing, provenance) from RUN_DIR/bundle.
"""

import sys
from pathlib import Path

import safetensors.torch

from hvx.bundle import load_bundle, save_bundle
from hvx.model._net import rebalance_for_fp16

run, alpha, out, parent = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
label = sys.argv[5] if len(sys.argv) > 5 else parent
meta = load_bundle(run / "bundle")
base = load_bundle(parent).build_model("cpu").state_dict()
ckpt = safetensors.torch.load_file(str(run / "checkpoints" / "best.safetensors"))
ft = {k[len("model/") :]: v for k, v in ckpt.items() if k.startswith("model/")}
model = meta.build_model("cpu")
sd = model.state_dict()
assert set(ft) == set(sd), sorted(set(ft) ^ set(sd))[:5]
mix = {
    k: ((1 - alpha) * base[k].float() + alpha * ft[k].float()).to(v.dtype)
    if v.is_floating_point()
    else ft[k]
    for k, v in sd.items()
}
model.load_state_dict(mix)
model.eval()
changed = rebalance_for_fp16(model)
prov = {
    **meta.provenance,
    "wise_ft": {"alpha": alpha, "parent": label, "finetuned": str(run / "checkpoints/best")},
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
