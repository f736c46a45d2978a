"""Trainer over several datasets: one with classes, one instance-only; resume; provenance."""

import json

import cv2
import numpy as np
import pytest
import torch

from hvx.bundle import load_bundle
from hvx.training.config import TrainConfig
from hvx.training.trainer import Trainer


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _disks(rng, n, size):
    images = rng.integers(150, 230, size=(n, size, size, 3), dtype=np.uint8)
    inst = np.zeros((n, size, size), np.int32)
    cls = np.zeros((n, size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for k in range(1, 7):
            cy, cx, r = rng.integers(6, size - 6), rng.integers(6, size - 6), rng.integers(3, 6)
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            inst[i][disk], cls[i][disk] = k, 1 + (k % 2)
            images[i][disk] = (90, 40, 140)
    return images, inst, cls


def _write(root, typed, n, size, seed):
    rng = np.random.default_rng(seed)
    images, inst, cls = _disks(rng, n, size)
    (root / "images").mkdir(parents=True)
    names = [f"t{i}" for i in range(n)]
    for name, img in zip(names, images, strict=True):
        cv2.imwrite(str(root / "images" / f"{name}.png"), img[..., ::-1])
    arrays = {"names": np.array(names), "inst": inst}
    if typed:
        arrays |= {"cls": cls, "source_image": np.array([f"img_{i % 3}" for i in range(n)])}
        arrays["class_names"] = np.array(["round", "dark"])
    np.savez(root / "labels.npz", **arrays)
    return root


def _config(a, b, **over):
    d = {
        "name": "multi",
        "model": {"variant": "fast_convnext_atto"},
        "preprocess": {"mode": "6ch"},
        "optim": {"lr": 1e-3, "sam": False},
        "data": {
            "crop_size": 64,
            "val_fraction": 0.34,
            "datasets": [
                {"path": str(a), "name": "typed"},
                {
                    "path": str(b),
                    "name": "plain",
                    "weight": 3.0,
                    "tile_size": 64,
                    "val_fraction": 0.25,
                },
            ],
        },
        "epochs": 2,
        "batch_size": 2,
        "val_batch_size": 4,
        "best_metric": "pq",
        **over,
    }
    return TrainConfig.from_dict(d)


def test_two_datasets_train_validate_and_record(tmp_path):
    a = _write(tmp_path / "typed", True, 9, 64, 0)
    b = _write(tmp_path / "plain", False, 4, 96, 1)
    cfg = _config(a, b)
    tr = Trainer(cfg, None, tmp_path / "run", device="cpu", progress=False)
    assert [p.name for p in tr.parts] == ["typed", "plain"]
    assert tr.parts[1].train.images.shape[1:3] == (64, 64)  # cut to tile_size
    assert tr.parts[1].val.images.shape[1:3] == (96, 96)  # validated whole
    res = tr.fit()
    assert res.status == "completed"
    rec = res.history[-1]
    assert set(rec["datasets"]) == {"typed", "plain"}
    assert "mpq_plus" not in rec["datasets"]["plain"]
    assert rec["pq"] == pytest.approx(
        (rec["datasets"]["typed"]["pq"] + rec["datasets"]["plain"]["pq"]) / 2
    )
    bundle = load_bundle(res.bundle)
    data = bundle.provenance["data"]
    assert [d["name"] for d in data["datasets"]] == ["typed", "plain"]
    assert set(data["val_sources"]) == {s for d in data["datasets"] for s in d["val_sources"]}
    assert bundle.class_names == ("round", "dark")
    assert "fp16_rebalanced" in bundle.provenance
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert "mean_loss" in next(r for r in log if r["event"] == "epoch")
    with pytest.raises(ValueError, match="either data"):
        Trainer(cfg, a, tmp_path / "run2", device="cpu", progress=False)


def test_resume_of_a_multi_dataset_run_is_exact(tmp_path):
    a = _write(tmp_path / "typed", True, 9, 64, 0)
    b = _write(tmp_path / "plain", False, 4, 96, 1)
    cfg = _config(a, b, epochs=1)
    full = Trainer(cfg, None, tmp_path / "full", device="cpu", progress=False)
    full.fit()
    part = Trainer(cfg, None, tmp_path / "part", device="cpu", progress=False)
    calls = {"n": 0}
    real = part.train_step

    def stop_after_two(batch):
        out = real(batch)
        calls["n"] += 1
        if calls["n"] == 2:
            part._stop = "interrupted"
        return out

    part.train_step = stop_after_two
    assert part.fit().status == "interrupted"
    again = Trainer(cfg, None, tmp_path / "part", device="cpu", progress=False, resume=True)
    again.fit()
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k


def test_needs_a_dataset_with_classes(tmp_path):
    b = _write(tmp_path / "plain", False, 4, 96, 1)
    c = _write(tmp_path / "plain2", False, 4, 96, 2)
    d = {
        "data": {"crop_size": 64, "datasets": [{"path": str(b)}, {"path": str(c)}]},
        "model": {"variant": "fast_convnext_atto"},
        "batch_size": 2,
    }
    with pytest.raises(ValueError, match="at least one dataset with class labels"):
        Trainer(TrainConfig.from_dict(d), None, tmp_path / "r", device="cpu", progress=False)
