"""Trainer validation goes through hvx.Engine.from_model: the model card's inference path."""

import dataclasses

import numpy as np
import pytest
import torch

import hvx
from hvx.assets import default_model_path
from hvx.bundle import load_bundle
from hvx.metrics import conic_scores
from hvx.training.config import TrainConfig
from hvx.training.data import TileDataset
from hvx.training.validation import evaluate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_model_path())


def _config(bundle, **over) -> TrainConfig:
    cfg = TrainConfig.from_dict({"name": "val", "val_batch_size": 2, **over})
    return dataclasses.replace(cfg, preprocess=bundle.preprocess, postprocess=bundle.postprocess)


def _tiles(h: int, w: int, n: int = 3, seed: int = 0) -> TileDataset:
    """Dark disks (nuclei-like) of classes 1..4 on a pale background."""
    rng = np.random.default_rng(seed)
    images = rng.integers(200, 235, size=(n, h, w, 3), dtype=np.uint8)
    inst = np.zeros((n, h, w), np.int32)
    cls = np.zeros((n, h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        for k in range(1, 6):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, 8)
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            inst[i][disk], cls[i][disk] = k, 1 + k % 4
            images[i][disk] = (70, 30, 120)
    names = ("misc", "inflammatory", "epithelial", "spindle")
    return TileDataset(images, inst, cls, [f"s{i}" for i in range(n)], names)


@pytest.mark.parametrize(("h", "w"), [(70, 45), (20, 12)])
def test_validation_scores_what_engine_load_gives(bundle, h, w):
    """Odd tiles (reflect padding) and tiles smaller than their pad (replicate: the
    trainer's own copy of the glue padded by reflection always and crashed on them)."""
    ds = _tiles(h, w)
    cfg = _config(bundle)
    got = evaluate(bundle.build_model("cpu"), ds, cfg, torch.device("cpu"), amp=True)
    engine = hvx.Engine.load(bundle.path, backend="torch", device="cpu", precision="fp32")
    pred = engine.infer(ds.images).to_conic()
    true = np.stack([ds.inst, ds.cls.astype(np.int32)], axis=-1)
    want = conic_scores(true, pred, num_classes=4)
    assert got["tiles"] == 3
    assert got["pq"] == float(want.pq) and got["mpq_plus"] == float(want.mpq_plus)
    assert got["pq_plus"] == [float(v) for v in np.asarray(want.pq_plus).ravel()]


def test_evaluate_runs_engine_from_model_with_the_run_settings(bundle, monkeypatch):
    from hvx.engine import Engine

    built, inferred = [], []
    from_model, infer = Engine.from_model.__func__, Engine.infer

    def spy_from_model(cls, model, pre, post, **kw):
        built.append((model, pre, post, kw))
        return from_model(cls, model, pre, post, **kw)

    def spy_infer(self, batch, **kw):
        inferred.append(len(batch))
        return infer(self, batch, **kw)

    monkeypatch.setattr(Engine, "from_model", classmethod(spy_from_model))
    monkeypatch.setattr(Engine, "infer", spy_infer)
    model = bundle.build_model("cpu").train()
    ds = _tiles(40, 40, n=5)
    cfg = _config(bundle)
    metrics = evaluate(model, ds, cfg, torch.device("cpu"), preprocess_impl="reference")
    assert metrics["tiles"] == 5 and model.training  # its mode is restored
    assert len(built) == 1
    m, pre, post, kw = built[0]
    assert m is model and pre is cfg.preprocess and post is cfg.postprocess
    assert kw["preprocess_impl"] == "reference" and kw["amp"] is None  # no autocast on the CPU
    # val_batch_size 2 at 256 x 256 is 81 tiles at 40 x 40: one call for all
    assert inferred == [5]
