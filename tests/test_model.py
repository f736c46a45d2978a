"""hvx.model: registry, shapes, feature pyramid, init, init_from, ONNX export."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import timm
import torch

from hvx.model import HoVerNet, HoVerNetInference, create_model, get_variant, list_variants
from hvx.model._init_from import adapt_stem_weight

VARIANTS = list_variants()
S1 = [v for v in VARIANTS if get_variant(v).size_multiple == 8]
FAST = [v for v in VARIANTS if v.startswith("fast_")]


def _meta_model(variant: str, **kw) -> HoVerNet:
    with torch.device("meta"):
        return create_model(variant, **kw)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def atto() -> HoVerNet:
    torch.manual_seed(0)
    return create_model("convnext_atto", num_types=4).eval()


@pytest.fixture(scope="module")
def fast_atto() -> HoVerNet:
    torch.manual_seed(0)
    return create_model("fast_convnext_atto", in_chans=3, num_types=7).eval()


def test_registry_lists_the_contract_variants():
    assert set(VARIANTS) == {
        "convnext_small", "convnext_tiny", "convnext_nano", "convnext_pico", "convnext_atto",
        "fast_convnext_atto", "fast_convnext_pico", "fast_convnext_tiny",
        "fast_hr_convnext_atto", "fast_hr_convnext_pico", "hovernet_resnet50",
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"expected a variant in .*convnext_small.*got 'vit'"):
        create_model("vit")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"in_chans": 4}, r"expected in_chans 3 or 6, got 4"),
        ({"in_chans": True}, r"expected in_chans 3 or 6"),
        ({"num_types": 1}, r"expected num_types >= 2 .*got 1"),
        ({"num_types": 2.0}, r"expected num_types >= 2"),
    ],
)
def test_create_model_rejects_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        create_model("fast_convnext_atto", **kw)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_builds_and_keeps_the_input_size(variant):
    # Meta tensors: shapes and parameter counts without computing anything.
    model = _meta_model(variant, in_chans=6, num_types=7)
    m = model.size_multiple
    assert m == (32 if variant.startswith("fast_") else 8)
    assert (model.variant, model.in_chans, model.num_types) == (variant, 6, 7)
    for h, w in ((256, 256), (m, 3 * m), (5 * m, 2 * m)):
        out = model(torch.empty(2, 6, h, w, device="meta"))
        assert list(out) == ["np", "hv", "tp"]
        assert tuple(out["np"].shape) == (2, 2, h, w)
        assert tuple(out["hv"].shape) == (2, 2, h, w)
        assert tuple(out["tp"].shape) == (2, 7, h, w)


@pytest.mark.parametrize("variant", VARIANTS)
def test_feature_pyramid_channels_and_strides(variant):
    # Port of timm's test_model_forward_features: channels from feature_info,
    # spatial size of each level = input / stride (after the stem surgery).
    spec = get_variant(variant)
    model = _meta_model(variant)
    kw = {"out_indices": (1, 2, 3, 4)} if "resnet" in spec.encoder else {}
    ref = timm.create_model(spec.encoder, features_only=True, pretrained=False, device="meta", **kw)
    assert model.feature_channels == tuple(ref.feature_info.channels())
    stock = tuple(ref.feature_info.reduction())
    expected = stock if spec.stem == "stock" else tuple(r // 4 for r in stock)
    assert model.feature_strides == expected
    assert expected == ((4, 8, 16, 32) if spec.stem == "stock" else (1, 2, 4, 8))
    h, w = 64, 96
    feats = model.encoder(torch.empty(1, 6, h, w, device="meta"))
    assert len(feats) == 4
    for f, c, s in zip(feats, model.feature_channels, model.feature_strides, strict=True):
        assert tuple(f.shape) == (1, c, h // s, w // s)


def test_stride1_stem_is_7x7_with_layernorm_kept():
    model = _meta_model("convnext_pico", in_chans=3)
    conv = model.encoder.body.stem_0
    assert (conv.kernel_size, conv.stride, conv.padding) == ((7, 7), (1, 1), (3, 3))
    assert conv.in_channels == 3 and conv.out_channels == model.feature_channels[0]
    assert type(model.encoder.body.stem_1).__name__ == "LayerNorm2d"
    r50 = _meta_model("hovernet_resnet50").encoder.body
    assert (r50.conv1.kernel_size, r50.conv1.stride, r50.conv1.padding) == ((7, 7), (1, 1), (3, 3))
    assert r50.conv1.bias is not None and isinstance(r50.maxpool, torch.nn.Identity)
    fast = _meta_model("fast_convnext_atto").encoder.body.stem_0
    assert (fast.kernel_size, fast.stride) == ((4, 4), (4, 4))


def test_hovernet_resnet50_matches_spec_4b_widths():
    dec = _meta_model("hovernet_resnet50").decoder
    assert tuple(dec.conv_bot.weight.shape) == (1024, 2048, 1, 1)
    br = dec.branches["np"]
    assert tuple(br.u3[0].weight.shape) == (256, 1024, 3, 3)
    assert tuple(br.u3[2].weight.shape) == (512, 512, 1, 1)
    assert tuple(br.u2[0].weight.shape) == (128, 512, 3, 3)
    assert tuple(br.u2[2].weight.shape) == (256, 256, 1, 1)
    assert tuple(br.u1.weight.shape) == (64, 256, 3, 3)
    assert list(dec.branches) == ["tp", "np", "hv"]


@pytest.mark.parametrize("size", [(32, 32), (48, 24)])
def test_stride1_forward_real_values(atto, size):
    x = torch.randn(2, 6, *size)
    with torch.no_grad():
        out = atto(x)
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {
        "np": (2, *size), "hv": (2, *size), "tp": (4, *size),
    }  # fmt: skip
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("size", [(32, 32), (64, 96)])
def test_fast_forward_real_values(fast_atto, size):
    with torch.no_grad():
        out = fast_atto(torch.randn(1, 3, *size))
    assert tuple(out["tp"].shape) == (1, 7, *size)


def test_inference_wrapper_returns_probabilities(atto):
    x = torch.randn(2, 6, 32, 40)
    with torch.no_grad():
        np_prob, hv, tp_prob = HoVerNetInference(atto)(x)
        logits = atto(x)
    assert np_prob.shape == (2, 32, 40) and hv.shape == (2, 2, 32, 40)
    assert tp_prob.shape == (2, 4, 32, 40)
    torch.testing.assert_close(tp_prob.sum(1), torch.ones(2, 32, 40))
    torch.testing.assert_close(np_prob, torch.softmax(logits["np"], 1)[:, 1])
    assert float(np_prob.min()) >= 0 and float(np_prob.max()) <= 1
    torch.testing.assert_close(hv, logits["hv"])
    with pytest.raises(TypeError, match="expected a HoVerNet, got Linear"):
        HoVerNetInference(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("x", "exc", "match"),
    [
        (
            torch.zeros(1, 3, 32, 32),
            ValueError,
            r"expected input of shape \(N, 6, H, W\), got \(1, 3",
        ),
        (torch.zeros(6, 32, 32), ValueError, r"expected input of shape .*got \(6, 32, 32\)"),
        (torch.zeros(1, 6, 30, 32), ValueError, r"multiples of 8 .*got 30x32"),
        (torch.zeros(1, 6, 32, 32, dtype=torch.uint8), ValueError, r"floating-point.*uint8"),
        (np.zeros((1, 6, 32, 32)), TypeError, r"expected a torch.Tensor, got ndarray"),
    ],
)
def test_forward_validates_input(atto, x, exc, match):
    with pytest.raises(exc, match=match):
        atto(x)


def test_fast_family_needs_multiples_of_32(fast_atto):
    with pytest.raises(ValueError, match=r"multiples of 32 for 'fast_convnext_atto', got 48x64"):
        fast_atto(torch.zeros(1, 3, 48, 64))


def test_init_is_deterministic_under_manual_seed():
    torch.manual_seed(123)
    a = create_model("fast_convnext_atto").state_dict()
    torch.manual_seed(123)
    b = create_model("fast_convnext_atto").state_dict()
    torch.manual_seed(124)
    c = create_model("fast_convnext_atto").state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["encoder.body.stem_0.weight"], c["encoder.body.stem_0.weight"])


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = create_model("convnext_atto", num_types=3).train()
    out = model(torch.randn(2, 6, 16, 16))
    sum(v.float().pow(2).mean() for v in out.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


# ---------------------------------------------------------------- init_from


@pytest.fixture(scope="module")
def timm_atto_checkpoint(tmp_path_factory):
    torch.manual_seed(7)
    sd = timm.create_model("convnext_atto", pretrained=False).state_dict()
    d = tmp_path_factory.mktemp("ckpt")
    from safetensors.torch import save_file

    save_file(sd, str(d / "atto.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, d / "atto.pth")
    return d, sd


@pytest.mark.parametrize("name", ["atto.safetensors", "atto.pth"])
def test_init_from_timm_checkpoint_adapts_the_stem(timm_atto_checkpoint, name):
    d, sd = timm_atto_checkpoint
    model = create_model("convnext_atto", in_chans=6, init_from=str(d / name))
    rep = model.init_report
    body = model.encoder.body.state_dict()
    assert torch.equal(
        body["stages_2.blocks.3.conv_dw.weight"], sd["stages.2.blocks.3.conv_dw.weight"]
    )
    assert torch.equal(body["stem_1.weight"], sd["stem.1.weight"])
    stem = body["stem_0.weight"]
    assert stem.shape == (40, 6, 7, 7)
    src = sd["stem.0.weight"]  # (40, 3, 4, 4), RGB
    bgr = src[:, [2, 1, 0]] * 0.5
    torch.testing.assert_close(stem[:, :3, 1:5, 1:5], bgr)
    torch.testing.assert_close(stem[:, 3:, 1:5, 1:5], bgr)
    assert float(stem[:, :, 0].abs().sum()) == 0 and float(stem[:, :, 5:].abs().sum()) == 0
    assert rep.adapted == ("stem_0.weight: (40, 3, 4, 4) -> (40, 6, 7, 7)",)
    assert rep.missing == () and rep.mismatched == ()
    prefix = "module." if name.endswith(".pth") else ""
    assert set(rep.unexpected) == {prefix + k for k in sd if k.startswith("head.")}
    assert "adapted" in rep.summary()


def test_init_from_reports_missing_keys_and_fits_the_fast_stem(timm_atto_checkpoint, caplog):
    d, sd = timm_atto_checkpoint
    partial = {k: v for k, v in sd.items() if not k.startswith("stages.3")}
    from safetensors.torch import save_file

    save_file(partial, str(d / "partial.safetensors"))
    with caplog.at_level("WARNING", logger="hvx.model"):
        model = create_model(
            "fast_convnext_atto", in_chans=3, init_from=str(d / "partial.safetensors")
        )
    rep = model.init_report
    assert rep.missing and all(k.startswith("stages_3.") for k in rep.missing)
    assert "missing (random init kept)" in caplog.text
    assert torch.equal(model.encoder.body.stem_0.weight, sd["stem.0.weight"])  # RGB, same shape
    assert rep.adapted == ()


def test_init_from_resnet50_leaves_conv1_bias_missing(tmp_path):
    torch.manual_seed(0)
    sd = timm.create_model("resnet50", pretrained=False).state_dict()
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "r50.safetensors"))
    model = create_model(
        "hovernet_resnet50", in_chans=3, init_from=str(tmp_path / "r50.safetensors")
    )
    assert model.init_report.missing == ("conv1.bias",)
    assert torch.equal(model.encoder.body.conv1.weight, sd["conv1.weight"])
    assert set(model.init_report.unexpected) == {"fc.weight", "fc.bias"}


def test_init_from_errors(tmp_path, timm_atto_checkpoint):
    d, _ = timm_atto_checkpoint
    with pytest.raises(FileNotFoundError, match="init_from checkpoint not found"):
        create_model("convnext_atto", init_from=str(tmp_path / "nope.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="could not read safetensors checkpoint"):
        create_model("convnext_atto", init_from=str(bad))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"torch.load\(weights_only=True\)"):
        create_model("convnext_atto", init_from=str(junk))
    with pytest.raises(
        ValueError, match=r"no tensor of .* matches the 'hovernet_resnet50' encoder"
    ):
        create_model("hovernet_resnet50", init_from=str(d / "atto.safetensors"))


def test_adapt_stem_weight_generic_rules():
    w = torch.arange(2 * 3 * 7 * 7, dtype=torch.float32).reshape(2, 3, 7, 7)
    assert torch.equal(adapt_stem_weight(w, (2, 3, 7, 7)), w)
    assert adapt_stem_weight(w, (3, 3, 7, 7)) is None  # other out channels
    assert adapt_stem_weight(w, (2, 3, 4, 4)) is None  # larger source kernel
    one = adapt_stem_weight(w[:, :1], (2, 3, 7, 7))
    torch.testing.assert_close(one, w[:, :1].repeat(1, 3, 1, 1) / 3)


# ---------------------------------------------------------------- ONNX


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    "variant", ["convnext_atto", "fast_convnext_atto", "fast_hr_convnext_atto"]
)
def test_onnx_export_matches_torch(variant):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    wrapper = HoVerNetInference(create_model(variant, num_types=4)).eval()
    m = wrapper.model.size_multiple
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (torch.randn(2, 6, m, 2 * m),), buf, dynamo=False, opset_version=17,
            input_names=["x"], output_names=["np_prob", "hv", "tp_prob"],
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "np_prob": {0: "n", 1: "h", 2: "w"},
                          "hv": {0: "n", 2: "h", 3: "w"}, "tp_prob": {0: "n", 2: "h", 3: "w"}},
        )  # fmt: skip
    onnx = pytest.importorskip("onnx")
    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    assert not ops & {"If", "Loop", "Scan", "NonZero"}  # no data-dependent control flow
    assert {"Softmax", "Resize", "Conv"} <= ops
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 6, 3 * m, m)  # other batch and size than the export example
    with torch.no_grad():
        ref = wrapper(x)
    got = sess.run(None, {"x": x.numpy()})
    for g, r in zip(got, ref, strict=True):
        assert g.shape == tuple(r.shape)
        np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=0)


def test_hires_variant_sees_single_pixels():
    """fast_hr_*: a one-pixel change moves the outputs at that pixel through the
    full-resolution skip (the plain light decoder only sees it through the
    stride-4 stem, blurred over its 4x4 cell)."""
    torch.manual_seed(0)
    model = create_model("fast_hr_convnext_atto", in_chans=6, num_types=3).eval()
    assert model.hires is not None and model.hires.widths == (16, 32)
    x = torch.randn(1, 6, 64, 64)
    y = x.clone()
    y[0, :, 21, 37] += 5.0
    with torch.no_grad():
        a, b = model(x)["hv"], model(y)["hv"]
    diff = (a - b).abs()[0].amax(0)
    assert diff[21, 37] > 0
    # the change stays local-ish: the far corner (outside every receptive
    # field of the skip path) only moves through the encoder, far less
    assert diff[21, 37] > 10 * diff[0, 0]
    plain = sum(p.numel() for p in create_model("fast_convnext_atto").parameters())
    hr = sum(p.numel() for p in create_model("fast_hr_convnext_atto").parameters())
    assert 0 < hr - plain < 0.01 * plain  # the skips are cheap in parameters
