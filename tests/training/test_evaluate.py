"""hvx-train --evaluate on instance-only data: whole images through the tiled path."""

import json

import cv2
import numpy as np
import pytest
import torch

from hvx.training.evaluate import evaluate_images, main


@pytest.fixture(scope="module")
def random_bundle(tmp_path_factory):
    from hvx.bundle import save_bundle
    from hvx.model import create_model
    from hvx.postprocess import PostprocessConfig
    from hvx.preprocess import PreprocessConfig

    def make(name, provenance=None):
        torch.manual_seed(0)
        model = create_model("fast_convnext_atto", in_chans=6, num_types=3)
        return save_bundle(
            tmp_path_factory.mktemp("b") / name,
            model,
            class_names=("a", "b"),
            mpp=0.25,
            preprocess=PreprocessConfig(),
            postprocess=PostprocessConfig(),
            provenance=provenance,
        )

    return make


def _folder(root, n=5, size=72):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    names = [f"im{i}" for i in range(n)]
    inst = np.zeros((n, size, size), np.int32)
    inst[:, 10:20, 10:20] = 1
    for name in names:
        cv2.imwrite(str(root / "images" / f"{name}.png"), rng.integers(0, 256, (size, size, 3)))
    np.savez(root / "labels.npz", names=np.array(names), inst=inst)
    organs = ["lung", "lung", "colon", "colon", "skin"]
    (root / "index.csv").write_text(
        "name,organ\n" + "".join(f"{a},{b}\n" for a, b in zip(names, organs, strict=True))
    )
    return root


def test_evaluate_images_default_split_for_an_unseen_dataset(tmp_path, random_bundle):
    data = _folder(tmp_path / "mono")
    rep = evaluate_images(random_bundle("plain"), data, backend="torch")
    assert rep["images"] == 1 and rep["split"].startswith("default split")
    assert set(rep) >= {"pq", "dq", "sq", "per_organ", "per_image", "nuclei_true"}
    assert rep["nuclei_true"] == 1
    assert 0.0 <= rep["pq"] <= 1.0
    organ = rep["sources"][0].split("_")[0]
    assert list(rep["per_organ"]) == [organ]


def test_evaluate_images_recorded_sources_and_refusal(tmp_path, random_bundle):
    data = _folder(tmp_path / "mono")
    rec = random_bundle(
        "rec", {"data": {"source": str(data), "val_sources": ["lung_im0", "colon_im3"]}}
    )
    rep = evaluate_images(rec, data, backend="torch")
    assert rep["split"] == "recorded" and rep["sources"] == ["colon_im3", "lung_im0"]
    assert set(rep["per_organ"]) == {"colon", "lung"}
    trained = random_bundle("trained", {"data": {"source": str(data), "val_sources": ["x"]}})
    with pytest.raises(ValueError, match="trained on mono but records none of its sources"):
        evaluate_images(trained, data, backend="torch")


def test_cli_reports_each_dataset(tmp_path, random_bundle, capsys):
    a = _folder(tmp_path / "one")
    b = _folder(tmp_path / "two")
    out = tmp_path / "r.json"
    bundle = random_bundle("cli")
    args = ["--evaluate", str(bundle), "--data", str(a), "--data", str(b)]
    rc = main([*args, "--backend", "torch", "--no-fp16", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert set(report["datasets"]) == {"one", "two"} and report["fp16"] is None
    assert "whole validation images" in capsys.readouterr().out
    rc = main(["--evaluate", str(bundle), "--data", str(a), "--backend", "torch", "--no-fp16"])
    assert rc == 0


@pytest.mark.parametrize("stain", ["reinhard", "macenko"])
def test_evaluate_images_normalises_each_whole_image(tmp_path, random_bundle, monkeypatch, stain):
    """--stain-norm: each image is fitted and mapped whole, then tiled (as hvx infer)."""
    import hvx.training.evaluate as ev
    from hvx.stain import StainNormalizer
    from hvx.training.datasets import load_instance_folder

    data = _folder(tmp_path / "mono")
    seen = []
    real = ev.infer_image
    monkeypatch.setattr(ev, "infer_image", lambda e, im, **kw: seen.append(im) or real(e, im, **kw))
    rep = evaluate_images(random_bundle("st"), data, backend="torch", stain=stain)
    assert rep["stain"] == stain and len(seen) == 1
    ds = load_instance_folder(data)
    i = ds.sources.index(rep["sources"][0])
    np.testing.assert_array_equal(seen[0], StainNormalizer(stain)(ds.images[i]))
    assert not np.array_equal(seen[0], ds.images[i])
