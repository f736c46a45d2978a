"""The default model and sample tiles shipped inside the package."""

import json

import numpy as np
import pytest

import hvx
from hvx import assets
from hvx.bundle import load_bundle
from hvx.io import read_image


def test_samples_are_real_256_tiles():
    paths = assets.sample_paths()
    assert len(paths) == 4
    for p in paths:
        img = read_image(p)
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8
        assert img.std() > 10  # real H&E, not a blank image


def test_default_bundle_is_valid_and_small():
    path = assets.default_model_path()
    bundle = load_bundle(path)
    assert bundle.class_names == ("misc", "inflammatory", "epithelial", "spindle")
    assert bundle.mpp == pytest.approx(0.25)
    assert bundle.provenance["data"]["val_sources"]
    weights = path / "weights.safetensors"
    assert weights.stat().st_size < 20 * 2**20
    meta = json.loads((path / "model.json").read_text())
    assert meta["variant"] == "fast_hr_convnext_atto"


def test_default_model_segments_the_samples():
    engine = hvx.Engine.load()
    images = np.stack([read_image(p) for p in assets.sample_paths()])
    result = engine.infer(images)
    counts = [len(t) for t in result.tables]
    assert all(c > 0 for c in counts), counts
    assert set(np.unique(result.type)) <= set(range(len(engine.class_names) + 1))


@pytest.mark.slow
def test_model_card_numbers_reproduce(consep_dir):
    from pathlib import Path

    from hvx.training.evaluate import evaluate_bundle

    card = json.loads(
        (Path(__file__).resolve().parents[1] / "docs" / "model-card-metrics.json").read_text()
    )
    got = evaluate_bundle(assets.default_model_path(), consep_dir, backend=card["backend"])
    assert got["tiles"] == card["tiles"] and got["sources"] == card["sources"]
    for key in ("pq", "dq", "sq", "mpq_plus"):
        assert got[key] == pytest.approx(card[key], abs=1e-6), key
    for name, c in card["per_class"].items():
        assert got["per_class"][name]["tp"] == c["tp"], name
        assert got["per_class"][name]["pq_plus"] == pytest.approx(c["pq_plus"], abs=1e-6)


def test_default_model_batchnorm_statistics_fit_float16():
    from hvx.model._net import fp16_unsafe_batchnorms

    model = load_bundle(assets.default_model_path()).build_model("cpu")
    assert fp16_unsafe_batchnorms(model) == []


@pytest.mark.slow
def test_default_model_float16_keeps_the_instance_maps():
    from hvx.precision import check_fp16

    bundle = load_bundle(assets.default_model_path())
    chk = check_fp16(bundle.build_model("cpu"), bundle.preprocess, bundle.postprocess)
    assert chk.pq >= 0.98, chk
