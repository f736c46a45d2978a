"""The published HoVer-Net in hvx: official names, sizes, geometry, ONNX (no reference code)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hovernet_helpers import official_state

from hvx.model import HoVerNetInference, create_model, get_variant, list_variants
from hvx.model.hovernet import OFFICIAL_VARIANTS, official_state_dict

# Counted on the official code (models/hovernet/net_desc.py, nr_types=None / 5).
OFFICIAL_SIZES = {
    ("fast", None): (632, 33_695_023),
    ("fast", 5): (798, 37_721_231),
    ("original", None): (632, 45_098_287),
    ("original", 5): (798, 54_826_127),
}
# A sample of the official key names, spelled as the official modules register them.
OFFICIAL_KEYS = [
    "conv0./.weight",
    "conv0.bn.running_var",
    "d0.units.0.conv1.weight",
    "d0.units.1.preact/bn.weight",
    "d0.units.2.conv2/bn.num_batches_tracked",
    "d0.shortcut.weight",
    "d1.units.3.conv3.weight",
    "d3.blk_bna.bn.bias",
    "conv_bot.weight",
    "decoder.np.u3.conva.weight",
    "decoder.np.u3.dense.units.7.preact_bna/bn.running_mean",
    "decoder.hv.u3.dense.units.0.conv1/bn.weight",
    "decoder.hv.u2.dense.blk_bna.bn.weight",
    "decoder.np.u2.convf.weight",
    "decoder.hv.u1.conva.weight",
    "decoder.np.u0.bn.weight",
    "decoder.hv.u0.conv.bias",
    "upsample2x.unpool_mat",
]


def _model(mode, num_types):
    variant = f"hovernet_{mode}" + ("" if num_types else "_notype")
    return create_model(variant, in_chans=3, num_types=num_types or 2)


@pytest.mark.parametrize("mode,num_types", list(OFFICIAL_SIZES))
def test_state_dict_has_the_official_names_and_sizes(mode, num_types):
    sd = _model(mode, num_types).state_dict()
    keys, numel = OFFICIAL_SIZES[(mode, num_types)]
    assert len(sd) == keys
    assert sum(v.numel() for v in sd.values()) == numel
    for k in OFFICIAL_KEYS + (["decoder.tp.u0.conv.weight"] if num_types else []):
        assert k in sd, k
    k = 5 if mode == "original" else 3
    assert sd["decoder.np.u3.conva.weight"].shape == (256, 1024, k, k)
    assert sd["decoder.np.u3.dense.units.0.conv2.weight"].shape == (32, 32, k, k)  # groups=4
    assert sd["d1.units.0.conv2.weight"].shape == (128, 128, 3, 3)
    if num_types:
        assert sd["decoder.tp.u0.conv.weight"].shape == (num_types, 64, 1, 1)
    assert torch.equal(sd["upsample2x.unpool_mat"], torch.ones(2, 2))


def test_variants_are_known_but_not_trainable():
    assert set(OFFICIAL_VARIANTS) == {
        "hovernet_fast",
        "hovernet_original",
        "hovernet_fast_notype",
        "hovernet_original_notype",
    }
    assert not set(OFFICIAL_VARIANTS) & set(list_variants())
    spec = get_variant("hovernet_original").to_dict()
    assert (spec["mode"], spec["window"], spec["output"]) == ("original", 270, 80)
    assert "window" not in get_variant(list_variants()[0]).to_dict()  # old bundles unchanged
    with pytest.raises(ValueError, match="in_chans=3"):
        create_model("hovernet_fast", in_chans=6)


def test_official_state_dict_strips_dataparallel_and_fills_buffers():
    sd = official_state("fast", 6)
    wrapped = {f"module.{k}": v for k, v in sd.items() if "num_batches" not in k}
    wrapped.pop("module.upsample2x.unpool_mat")
    mapped = official_state_dict(wrapped)
    assert set(mapped) == set(sd)
    m = _model("fast", 6)
    m.load_state_dict(mapped, strict=True)
    assert torch.equal(m.state_dict()["d2.units.5.conv3.weight"], sd["d2.units.5.conv3.weight"])


@pytest.mark.slow
@pytest.mark.parametrize("mode,num_types", [("fast", 6), ("original", None)])
def test_forward_geometry_and_inference_heads(mode, num_types):
    m = _model(mode, num_types).eval()
    m.load_state_dict(official_state(mode, num_types), strict=True)
    x = torch.rand(1, 3, m.window, m.window)
    with torch.no_grad():
        out = m(x)
        np_prob, _, tp_prob = HoVerNetInference(m)(x)
    o = m.output
    assert out["np"].shape == (1, 2, o, o) and out["hv"].shape == (1, 2, o, o)
    assert out["tp"].shape == (1, num_types or 2, o, o)
    torch.testing.assert_close(np_prob, torch.softmax(out["np"], 1)[:, 1])
    torch.testing.assert_close(tp_prob.sum(1), torch.ones(1, o, o))
    if num_types is None:  # no type branch: type 1 = nucleus, its probability = np's
        torch.testing.assert_close(tp_prob[:, 1], np_prob)
    with pytest.raises(ValueError, match=f"\\(N, 3, {m.window}, {m.window}\\)"):
        m(torch.rand(1, 3, m.window + 8, m.window))


@pytest.mark.slow
def test_onnx_export_fixed_window_dynamic_batch(tmp_path):
    import onnx

    from hvx.backends.export import export_onnx
    from hvx.backends.onnxruntime import OnnxRuntimeBackend

    m = _model("fast", 6).eval()
    m.load_state_dict(official_state("fast", 6), strict=True)
    path = export_onnx(
        HoVerNetInference(m), tmp_path / "hn.onnx", in_chans=3, example_size=256, fixed_size=True
    )  # validated with ONNX Runtime against torch inside (batches of 1 and 3)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, 256, 256]
    x = torch.rand(2, 3, 256, 256)
    got = OnnxRuntimeBackend(path).run(x)
    with torch.no_grad():
        ref = HoVerNetInference(m)(x)
    np.testing.assert_allclose(got.hv, ref[1].numpy(), atol=1e-4)
    assert got.tp_prob.shape == (2, 6, 164, 164)


def test_window_plan_settings_fix_the_spatial_axes():
    from hvx.backends.plan import PlanSettings, window_plan_settings

    s = window_plan_settings(PlanSettings(precision=("tf32",)), 270)
    assert (s.min_shape, s.opt_shape, s.max_shape) == ((1, 270, 270), (8, 270, 270), (16, 270, 270))
    assert s.precision == ("tf32",)
