"""hvx.Engine.from_model: the inference path of a bundle around a network in memory."""

import numpy as np
import pytest
import torch

import hvx
from hvx.assets import default_model_path, sample_paths
from hvx.bundle import load_bundle
from hvx.io import read_image
from hvx.model import create_model
from hvx.model_runner import ModelRunner
from hvx.postprocess import PostprocessConfig
from hvx.preprocess import PreprocessConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images():
    """Two sample tiles cut to odd sizes (padded by reflection) and two tiles smaller
    than their pad (replicated): every branch of the padding."""
    tiles = np.stack([read_image(p) for p in sample_paths()[:2]])
    return {"odd": np.ascontiguousarray(tiles[:, 3:240, 5:250]), "tiny": tiles[:, :20, :12].copy()}


@pytest.fixture(scope="module")
def default_bundle():
    return load_bundle(default_model_path())


@pytest.mark.parametrize("kind", ["odd", "tiny"])
def test_from_model_equals_load_on_the_same_bundle_bit_for_bit(default_bundle, images, kind):
    b = default_bundle
    loaded = hvx.Engine.load(b.path, backend="torch", device="cpu", precision="fp32")
    mine = hvx.Engine.from_model(
        b.build_model("cpu"), b.preprocess, b.postprocess, class_names=b.class_names, mpp=b.mpp
    )
    assert (mine.backend, mine.device, mine.precision) == ("torch", "cpu", "fp32")
    assert mine.size_multiple == loaded.size_multiple and mine.valid_window is None
    assert mine.class_names == loaded.class_names and mine.class_colors == loaded.class_colors
    x = images[kind]
    ha, hb = loaded.heads(x)[0].numpy(), mine.heads(x)[0].numpy()
    for name in ("np_prob", "hv", "tp_prob"):
        assert np.array_equal(getattr(ha, name), getattr(hb, name)), name
    ra, rb = loaded.infer(x), mine.infer(x)
    assert np.array_equal(ra.inst, rb.inst) and np.array_equal(ra.type, rb.type)
    assert ra.inst.shape == x.shape[:3]
    assert kind == "tiny" or ra.inst.max() > 0  # the odd crops hold nuclei
    for ta, tb in zip(ra.tables, rb.tables, strict=True):
        assert np.array_equal(ta.id, tb.id) and np.array_equal(ta.type_prob, tb.type_prob)


def test_the_model_is_run_as_it_is_and_left_as_it_was(images):
    torch.manual_seed(0)
    model = create_model("fast_convnext_atto", in_chans=6, num_types=3).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine = hvx.Engine.from_model(model, PreprocessConfig(), PostprocessConfig())
    assert engine.class_names == ("type1", "type2") and engine.mpp is None
    first = engine.heads(images["odd"])[0].numpy()
    assert model.training  # eval during the call only
    assert all(p.requires_grad for p in model.parameters())  # not frozen (still training)
    for k, v in model.state_dict().items():  # BatchNorm statistics untouched (eval mode)
        assert torch.equal(v, before[k]), k
    again = engine.heads(images["odd"])[0].numpy()
    assert np.array_equal(first.np_prob, again.np_prob)


def test_preprocess_impl_is_honoured_and_checked(images, monkeypatch):
    import hvx.preprocess as hp

    torch.manual_seed(0)
    model = create_model("fast_convnext_atto", in_chans=6, num_types=3)
    seen = []
    real = hp.preprocess

    def spy(*args, **kw):
        seen.append(kw.get("impl"))
        return real(*args, **kw)

    monkeypatch.setattr(hp, "preprocess", spy)
    ref = hvx.Engine.from_model(
        model, PreprocessConfig(), PostprocessConfig(), preprocess_impl="reference"
    )
    fast = hvx.Engine.from_model(model, PreprocessConfig(), PostprocessConfig())
    a, b = ref.infer(images["odd"]), fast.infer(images["odd"])
    assert seen == ["reference", "auto"]
    assert np.array_equal(a.inst, b.inst)  # every implementation gives the same input
    with pytest.raises(ValueError, match=r"expected preprocess_impl one of .* got 'fast'"):
        hvx.Engine.from_model(
            model, PreprocessConfig(), PostprocessConfig(), preprocess_impl="fast"
        )


def test_bad_arguments_say_what_was_expected():
    model = create_model("fast_convnext_atto", in_chans=6, num_types=3)
    with pytest.raises(ValueError, match=r"expected a CUDA model for amp='float16', got .* cpu"):
        hvx.Engine.from_model(model, PreprocessConfig(), PostprocessConfig(), amp="float16")
    with pytest.raises(ValueError, match=r"expected amp None or one of"):
        ModelRunner(model, amp="fp8")
    with pytest.raises(ValueError, match=r"expected 2 class names and colours .* got 3 names"):
        hvx.Engine.from_model(
            model, PreprocessConfig(), PostprocessConfig(), class_names=("a", "b", "c")
        )
    engine = hvx.Engine.from_model(model, PreprocessConfig(), PostprocessConfig())
    engine.input_mpp = 0.5
    with pytest.raises(ValueError, match=r"expected the model's mpp .*pass mpp="):
        engine.infer(np.zeros((1, 32, 32, 3), np.uint8))


def test_a_half_precision_copy_runs_in_its_own_dtype(images):
    torch.manual_seed(0)
    model = create_model("fast_convnext_atto", in_chans=6, num_types=3).eval()
    half = hvx.Engine.from_model(model.half(), PreprocessConfig(), PostprocessConfig())
    assert half.precision == "fp16" and half.runner.input_dtype == torch.float16
    heads = half.heads(images["tiny"])[0]
    assert heads.np_prob.dtype == torch.float16 and heads.spatial == (20, 12)


@pytest.mark.slow
def test_a_valid_padding_network_runs_the_engine_tile_mode():
    """The published HoVer-Net (valid convolutions): from_model takes its window and
    output and tiles like Engine.load does (here against the torch backend's Engine)."""
    import copy

    from hvx.backends.torch import TorchBackend

    torch.manual_seed(0)
    model = create_model("hovernet_fast", in_chans=3, num_types=3).eval()
    pre, post = PreprocessConfig(mode="rgb"), PostprocessConfig()
    mine = hvx.Engine.from_model(model, pre, post)
    assert mine.valid_window == (256, 164) and mine.size_multiple == 1
    runner = TorchBackend.from_model(copy.deepcopy(model), device="cpu", precision="fp32")
    theirs = hvx.Engine(
        runner,
        preprocess_config=pre,
        postprocess_config=post,
        class_names=("a", "b"),
        class_colors=((1, 2, 3), (4, 5, 6)),
        num_types=3,
        size_multiple=1,
        mpp=0.25,
        source="test",
        valid_window=(256, 164),
    )
    img = np.random.default_rng(3).integers(0, 256, (1, 100, 90, 3), dtype=np.uint8)
    a, b = mine.heads(img)[0].numpy(), theirs.heads(img)[0].numpy()
    assert a.np_prob.shape == (1, 100, 90)
    for name in ("np_prob", "hv", "tp_prob"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
