"""The ONNX export cache: keyed on what determines the graph, not on the hvx version."""

import json
import shutil

import pytest
import torch

from hvx import _artifacts
from hvx.backends import export as ex
from hvx.bundle import load_bundle, save_bundle
from hvx.model import create_model
from hvx.postprocess import PostprocessConfig
from hvx.preprocess import PreprocessConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _save(path, seed: int):
    torch.manual_seed(seed)
    model = create_model("fast_convnext_atto", in_chans=6, num_types=3)
    save_bundle(
        path,
        model,
        class_names=("a", "b"),
        mpp=0.5,
        preprocess=PreprocessConfig(),
        postprocess=PostprocessConfig(),
    )
    return load_bundle(path)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    a = _save(root / "a", seed=0)
    # The same bundle as a later hvx version would re-save it: same weights file,
    # another hvx_version, creation time, provenance and metrics.
    shutil.copytree(a.path, root / "a2")
    m = json.loads((root / "a2" / "model.json").read_text())
    m.update(hvx_version="9.9.9", created="2030-01-01T00:00:00+00:00")
    m.update(provenance={"note": "re-saved"}, metrics={"pq": 0.5})
    (root / "a2" / "model.json").write_text(json.dumps(m))
    return a, load_bundle(root / "a2"), _save(root / "b", seed=1)


def test_key_ignores_version_and_bookkeeping(bundles):
    a, resaved, other = bundles
    assert _artifacts._bundle_digest(a) == _artifacts._bundle_digest(resaved)
    assert _artifacts._bundle_digest(a) != _artifacts._bundle_digest(other)  # other weights


@pytest.mark.parametrize(
    "change",
    [
        {"opset": 18},
        {"weights_sha256": "1" * 64},
        {"in_chans": 3},
        {"num_types": 4},
        {"example_size": 96},
        {"fixed_size": True},
        {"architecture": {"name": "x"}},
    ],
)
def test_key_changes_with_what_determines_the_export(change):
    base = {
        "weights_sha256": "0" * 64,
        "architecture": {"name": "fast_convnext_atto"},
        "in_chans": 6,
        "num_types": 3,
        "example_size": 64,
        "fixed_size": False,
    }
    key = ex.export_cache_key(**base)
    assert len(key) == 24 and ex.export_cache_key(**base) == key
    assert ex.export_cache_key(**{**base, **change}) != key


def test_key_changes_with_the_export_format_version(bundles, monkeypatch):
    a, _, _ = bundles
    before = _artifacts._bundle_digest(a)
    monkeypatch.setattr(ex, "EXPORT_FORMAT_VERSION", ex.EXPORT_FORMAT_VERSION + 1)
    assert _artifacts._bundle_digest(a) != before


def test_resaved_bundle_reuses_the_cached_export(bundles, tmp_path, monkeypatch):
    a, resaved, _ = bundles
    first = _artifacts.onnx_for_bundle(a, tmp_path)
    assert first.is_file()

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this export")

    monkeypatch.setattr(ex, "export_onnx", no_export)
    assert _artifacts.onnx_for_bundle(resaved, tmp_path) == first
