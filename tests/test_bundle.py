"""hvx.bundle: save/load round trips and every way a bundle can be broken."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import hvx.bundle as hb
from hvx.bundle import ModelBundle, load_bundle, save_bundle
from hvx.io.digest import file_sha256 as _sha256
from hvx.model import create_model, get_variant
from hvx.postprocess import PostprocessConfig
from hvx.preprocess import PreprocessConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


_RGB = PreprocessConfig(mode="rgb")
NAMES = ("inflammatory", "epithelial", "stromal", "other")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = create_model("fast_convnext_atto", in_chans=6, num_types=5)
    # non-trivial BN statistics so a mix-up of buffers would show
    with torch.no_grad():
        m.train()(torch.randn(2, 6, 32, 32))
    return m.eval()


def _save(path, model, **kw):
    args = {
        "class_names": NAMES,
        "mpp": 0.5,
        "preprocess": PreprocessConfig(),
        "postprocess": PostprocessConfig(),
        "provenance": {"config": "cpu", "seed": 0},
        "metrics": {"pq": 0.61, "mpq_plus": 0.42},
    }
    args.update(kw)
    return save_bundle(path, model, **args)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, model):
    return _save(tmp_path_factory.mktemp("b") / "bundle", model)


@pytest.fixture
def copy(bundle_dir, tmp_path):
    """A fresh copy of the saved bundle to break."""
    return Path(shutil.copytree(bundle_dir, tmp_path / "copy"))


def _edit(path: Path, **changes):
    m = json.loads((path / "model.json").read_text())
    for k, v in changes.items():
        if v is _DELETE:
            del m[k]
        else:
            m[k] = v
    (path / "model.json").write_text(json.dumps(m))


_DELETE = object()


def test_public_names_still_import_from_hvx_bundle():
    """The module was split (_bundle_manifest/_weights/_write); hvx.bundle keeps its names."""
    names = {
        "BUNDLE_FORMAT", "DEFAULT_COLORS", "MANIFEST_FILE", "MAX_JSON_DEPTH",
        "MAX_MANIFEST_BYTES", "SCHEMA_VERSION", "VALUE_RANGES", "WEIGHTS_FILE",
        "ModelBundle", "check_values", "import_hovernet", "load_bundle", "save_bundle",
    }  # fmt: skip
    assert names <= set(hb.__all__) and all(hasattr(hb, n) for n in names)
    assert hb.save_bundle.__module__ == "hvx._bundle_write"


def test_roundtrip_float32_is_exact(bundle_dir, model):
    b = load_bundle(bundle_dir)
    assert isinstance(b, ModelBundle)
    assert (b.variant, b.in_chans, b.num_types, b.mpp) == ("fast_convnext_atto", 6, 5, 0.5)
    assert b.class_names == NAMES and len(b.class_colors) == 4
    assert all(len(c) == 3 for c in b.class_colors)
    assert b.preprocess == PreprocessConfig() and b.postprocess == PostprocessConfig()
    assert b.provenance == {"config": "cpu", "seed": 0}
    assert b.metrics == {"pq": 0.61, "mpq_plus": 0.42}
    assert b.weights_dtype == "float32"
    net = b.build_model()
    assert not net.training
    ref = model.state_dict()
    got = net.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    x = torch.randn(1, 6, 32, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x)["tp"], model(x)["tp"], rtol=0, atol=0)
    m = json.loads((bundle_dir / "model.json").read_text())
    assert m["schema_version"] == hb.SCHEMA_VERSION and m["format"] == "hvx-model-bundle"
    assert m["architecture"]["decoder"] == "light"
    assert sorted(p.name for p in bundle_dir.iterdir()) == ["model.json", "weights.safetensors"]


def test_roundtrip_float16_storage(tmp_path, model, bundle_dir):
    colors = [(1, 2, 3), (4, 5, 6), (7, 8, 9), (250, 251, 252)]
    p = _save(tmp_path / "half", model, weights_dtype=torch.float16, class_colors=colors)
    size32 = (bundle_dir / "weights.safetensors").stat().st_size
    size16 = (p / "weights.safetensors").stat().st_size
    assert size16 < 0.55 * size32
    b = load_bundle(p)
    assert b.weights_dtype == "float16" and b.class_colors == tuple(colors)
    net = b.build_model(dtype=torch.float32)
    w = net.encoder.body.stem_0.weight
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, model.encoder.body.stem_0.weight.half().float(), rtol=0, atol=0)
    x = torch.randn(1, 6, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x)["np"], model(x)["np"], rtol=0.05, atol=0.05)
    net16 = b.build_model(dtype=torch.float16)
    assert net16.encoder.body.stem_0.weight.dtype == torch.float16
    assert net16.encoder.body.stem_0.weight.device.type == "cpu"


def test_save_as_keeps_the_metadata_and_adds_provenance(tmp_path, bundle_dir):
    src = load_bundle(bundle_dir)
    model = src.build_model("cpu")
    out = src.save_as(
        tmp_path / "derived",
        model,
        provenance={"seed": 7, "note": "x"},
        weights_dtype=torch.float16,
    )
    got = load_bundle(out)
    for field in ("variant", "class_names", "class_colors", "mpp", "preprocess", "postprocess"):
        assert getattr(got, field) == getattr(src, field), field
    assert got.metrics == src.metrics
    assert got.provenance["config"] == "cpu" and got.provenance["note"] == "x"
    assert got.provenance["seed"] == 7  # the given entries override the source's
    assert got.weights_dtype == "float16"


def test_save_replaces_an_existing_bundle_and_leaves_no_temp_files(tmp_path, model):
    p = _save(tmp_path / "b", model, metrics={"pq": 0.1})
    _save(p, model, metrics={"pq": 0.2})
    assert load_bundle(p).metrics == {"pq": 0.2}
    assert [q.name for q in tmp_path.iterdir()] == ["b"]


def test_saved_bundle_is_readable_by_others(tmp_path, model):
    # a bundle is shared (lab servers, the package): not owner-only like mkdtemp's
    out = _save(tmp_path / "b", model)
    assert out.stat().st_mode & 0o777 == 0o755
    for f in out.iterdir():
        assert f.stat().st_mode & 0o777 == 0o644, f.name


def test_save_is_atomic_when_writing_fails(tmp_path, model, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path / "b", model)
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_to_overwrite_a_foreign_folder(tmp_path, model):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match=r"refusing to overwrite .*not an hvx bundle"):
        _save(tmp_path / "data", model)
    assert (tmp_path / "data" / "keep.txt").exists()


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"class_names": ("a", "b")}, ValueError, r"expected 4 non-empty names .*got \['a', 'b'\]"),
        ({"class_names": "abcd"}, ValueError, r"class_names: expected a list of str, got str"),
        ({"class_names": ("a", "a", "b", "c")}, ValueError, r"expected unique names"),
        ({"class_colors": [(0, 0, 0)] * 3}, ValueError, r"expected 4 RGB triples"),
        ({"class_colors": [(0, 0, 256)] * 4}, ValueError, r"RGB ints in .*got \(0, 0, 256\)"),
        ({"mpp": 0.0}, ValueError, r"mpp: expected a positive number .*got 0.0"),
        ({"mpp": float("nan")}, ValueError, r"mpp: expected a positive number"),
        ({"preprocess": _RGB}, ValueError, r"6 channels .*in_chans=3"),
        ({"preprocess": {"mode": "6ch"}}, TypeError, r"preprocess: expected a config with to_dict"),
        ({"metrics": {"pq": float("nan")}}, ValueError, r"metrics: expected JSON-serialisable"),
        ({"provenance": {"when": object()}}, ValueError, r"provenance: expected JSON-serialisable"),
        ({"weights_dtype": torch.int8}, ValueError, r"expected weights_dtype float32, float16 or"),
    ],
)  # fmt: skip
def test_save_validates_metadata(tmp_path, model, kw, exc, match):
    with pytest.raises(exc, match=match):
        _save(tmp_path / "b", model, **kw)
    assert not (tmp_path / "b").exists()


def test_save_rejects_non_models(tmp_path):
    with pytest.raises(TypeError, match=r"expected a hvx\.model\.HoVerNet, got Linear"):
        _save(tmp_path / "b", torch.nn.Linear(2, 2))


@pytest.fixture(scope="module")
def big_model():
    """A model with two tensors beyond float16's range (like a BN running variance)."""
    torch.manual_seed(0)
    big = create_model("fast_convnext_atto", in_chans=6, num_types=5)
    with torch.no_grad():
        big.decoder.branches["np"].head.bias.fill_(1e6)
        big.decoder.branches["tp"].head.bias[0] = -7e4
    return big.eval()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_tensors_beyond_the_storage_range_are_kept_float32(tmp_path, big_model, dtype):
    p = _save(tmp_path / "b", big_model, weights_dtype=dtype)
    kept = ["decoder.branches.np.head.bias", "decoder.branches.tp.head.bias"]
    info = json.loads((p / "model.json").read_text())["weights"]
    if dtype == torch.float16:
        assert info["float32_tensors"] == kept
        assert load_bundle(p).float32_tensors == tuple(kept)
    else:  # bfloat16 has float32's range: nothing to keep, the key is left out
        assert "float32_tensors" not in info
    stored = load_file(str(p / "weights.safetensors"))
    for k, v in stored.items():
        if v.is_floating_point():
            assert v.dtype == (torch.float32 if k in info.get("float32_tensors", []) else dtype)
    net = load_bundle(p).build_model(dtype=torch.float32)
    ref = big_model.state_dict()
    for k, v in net.state_dict().items():
        want = ref[k] if k in info.get("float32_tensors", []) else ref[k].to(dtype).to(ref[k].dtype)
        torch.testing.assert_close(v, want, rtol=0, atol=0, msg=k)


@pytest.fixture
def kept_copy(tmp_path, big_model):
    return _save(tmp_path / "kept", big_model, weights_dtype=torch.float16)


@pytest.mark.parametrize(
    ("names", "dtype", "match"),
    [
        ([], None, r"float32_tensors: expected a non-empty sorted list of unique tensor names"),
        (
            ["decoder.branches.tp.head.bias", "decoder.branches.np.head.bias"],
            None,
            r"expected a non-empty sorted list",
        ),
        ("decoder.branches.np.head.bias", None, r"expected a non-empty sorted list"),
        (["decoder.branches.np.head.bias", 3], None, r"expected a non-empty sorted list"),
        (["no.such.tensor"], None, r"expected floating tensors of the architecture, got \['no"),
        (
            ["decoder.branches.np.head.bias"],
            None,
            r"tp.head.bias is stored as F32, model.json says F16",
        ),
        (
            [
                "decoder.branches.np.head.bias",
                "decoder.branches.np.head.weight",
                "decoder.branches.tp.head.bias",
            ],
            None,
            r"np.head.weight is stored as F16, model.json says F32",
        ),
        (None, "float32", r"float32_tensors: expected only with float16 or bfloat16 storage"),
    ],
)
def test_float32_tensors_list_must_match_the_file(kept_copy, names, dtype, match):
    m = json.loads((kept_copy / "model.json").read_text())
    if names is not None:
        m["weights"]["float32_tensors"] = names
    if dtype is not None:
        m["weights"]["dtype"] = dtype
    (kept_copy / "model.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=match):
        load_bundle(kept_copy)


def test_unknown_weights_key_is_refused(copy):
    m = json.loads((copy / "model.json").read_text())
    m["weights"]["float64_tensors"] = ["x"]
    (copy / "model.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=r"expected keys .* \(optional \['float32_tensors'\]\)"):
        load_bundle(copy)


# ------------------------------------------------------------- broken bundles


def test_truncated_weights(copy):
    w = copy / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:-1000])
    with pytest.raises(ValueError, match=r"truncated or altered: expected \d+ bytes, got \d+"):
        load_bundle(copy)


def test_corrupt_weights_same_size(copy):
    w = copy / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupt: SHA-256 [0-9a-f]{64} differs from model.json"):
        load_bundle(copy)


def test_missing_weights_file(copy):
    (copy / "weights.safetensors").unlink()
    with pytest.raises(ValueError, match=r"missing weights.safetensors"):
        load_bundle(copy)


def _rewrite_weights(path: Path, state: dict, dtype: str | None = None):
    """Writes a self-consistent (size + hash) but architecturally wrong weights file."""
    w = path / "weights.safetensors"
    save_file(state, str(w))
    m = json.loads((path / "model.json").read_text())
    m["weights"].update(bytes=w.stat().st_size, sha256=_sha256(w), tensors=len(state))
    if dtype:
        m["weights"]["dtype"] = dtype
    (path / "model.json").write_text(json.dumps(m))


def test_weights_missing_a_tensor(copy):
    state = load_file(str(copy / "weights.safetensors"))
    del state["decoder.branches.hv.head.weight"]
    state["extra.weight"] = torch.zeros(2)
    _rewrite_weights(copy, state)
    with pytest.raises(
        ValueError,
        match=r"do not match the architecture: missing \['decoder.branches.hv.head.weight'\].*"
        r"unexpected \['extra.weight'\]",
    ):
        load_bundle(copy)


def test_weights_shape_mismatch(copy):
    # model.json says 4 types, the weights were trained with 5
    _edit(copy, num_types=4, class_names=list(NAMES[:3]), class_colors=[[0, 0, 0]] * 3)
    with pytest.raises(
        ValueError, match=r"shape mismatch for decoder.branches.tp.head.\w+: expected"
    ):
        load_bundle(copy)


def test_weights_of_another_variant(copy):
    arch = get_variant("fast_convnext_pico").to_dict()
    _edit(copy, variant="fast_convnext_pico", architecture=arch)
    with pytest.raises(ValueError, match=r"shape mismatch for encoder"):
        load_bundle(copy)


def test_weights_dtype_disagrees_with_manifest(copy):
    state = load_file(str(copy / "weights.safetensors"))
    state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    _rewrite_weights(copy, state)  # says float32, stores F16
    with pytest.raises(ValueError, match=r"is stored as F16, model.json says F32"):
        load_bundle(copy)


def test_not_safetensors_at_all(copy):
    w = copy / "weights.safetensors"
    w.write_bytes(b"\x00" * 64)
    m = json.loads((copy / "model.json").read_text())
    m["weights"].update(bytes=64, sha256=_sha256(w))
    (copy / "model.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=r"unreadable safetensors file"):
        load_bundle(copy)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"colour": "red"}, r"unknown fields \['colour'\], missing fields \[\]"),
        ({"mpp": _DELETE}, r"unknown fields \[\], missing fields \['mpp'\]"),
        ({"schema_version": 2}, r"unsupported schema_version 2; .* reads schema_version 1"),
        ({"format": "other"}, r"expected format 'hvx-model-bundle', got 'other'"),
        ({"variant": "unet"}, r"variant: expected a variant in .*got 'unet'"),
        ({"architecture": {"name": "x"}}, r"architecture: expected \{.*for variant"),
        ({"in_chans": "6"}, r"in_chans: expected .*int.*got str"),
        ({"num_types": True}, r"num_types: expected"),
        ({"mpp": -1}, r"mpp: expected a positive number"),
        ({"class_names": ["a"]}, r"class_names: expected 4 non-empty names"),
        ({"class_colors": [[0, 0]] * 4}, r"class_colors: expected RGB ints"),
        ({"preprocess": {"mode": "6ch", "gamma": 1}}, r"unknown key 'preprocess.gamma'; expected"),
        ({"postprocess": {}}, r"missing keys 'postprocess.np_threshold', "),
        ({"metrics": [1]}, r"metrics: expected .*dict.*got list"),
        ({"weights": {"file": "weights.safetensors"}}, r"weights: expected keys"),
    ],
)  # fmt: skip
def test_bad_manifest_fields(copy, changes, match):
    _edit(copy, **changes)
    with pytest.raises(ValueError, match=match):
        load_bundle(copy)


def test_manifest_preprocess_must_match_in_chans(copy):
    pre = PreprocessConfig(mode="rgb").to_dict()
    _edit(copy, preprocess=pre)
    with pytest.raises(ValueError, match=r"preprocess gives 3 channels, expected in_chans=6"):
        load_bundle(copy)


def test_manifest_not_json_or_not_a_bundle(copy, tmp_path):
    (copy / "model.json").write_text("{ nope")
    with pytest.raises(ValueError, match=r"model.json: not valid JSON"):
        load_bundle(copy)
    (copy / "model.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"expected a JSON object, got list"):
        load_bundle(copy)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"expected a model bundle folder with model.json"):
        load_bundle(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="model bundle not found"):
        load_bundle(tmp_path / "nowhere")


def test_weights_replaced_after_loading(copy):
    b = load_bundle(copy)
    state = load_file(str(copy / "weights.safetensors"))
    state["decoder.branches.tp.head.bias"] = torch.zeros(3)
    save_file(state, str(copy / "weights.safetensors"))
    with pytest.raises(ValueError, match=r"does not fit 'fast_convnext_atto'"):
        b.build_model()


def test_roundtrip_bfloat16_storage(tmp_path, model):
    b = load_bundle(_save(tmp_path / "bf16", model, weights_dtype=torch.bfloat16))
    assert b.weights_dtype == "bfloat16"
    w = b.build_model().encoder.body.stem_0.weight
    assert w.dtype == torch.float32
    torch.testing.assert_close(
        w, model.encoder.body.stem_0.weight.bfloat16().float(), rtol=0, atol=0
    )


def test_manifest_config_values_are_validated_by_the_config_class(copy):
    pre = PreprocessConfig().to_dict()
    pre["mode"] = "cmyk"
    _edit(copy, preprocess=pre)
    with pytest.raises(ValueError, match=r"model.json: preprocess: .*cmyk"):
        load_bundle(copy)
