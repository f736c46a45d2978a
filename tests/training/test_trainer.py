"""The trainer on tiny synthetic data: a few steps, resume equivalence, damaged checkpoints."""

import json
import os
import signal

import numpy as np
import pytest
import torch

from hvx.bundle import load_bundle
from hvx.training import cli
from hvx.training.config import TrainConfig
from hvx.training.data import TileDataset
from hvx.training.prepare import prepare_dataset
from hvx.training.sampling import EpochBatches, TrainTiles, epoch_order
from hvx.training.trainer import Trainer
from hvx.training.validation import evaluate

TINY = {
    "name": "tiny",
    "model": {"variant": "fast_convnext_atto"},
    "preprocess": {"mode": "6ch"},
    "optim": {"lr": 1e-3, "sam": True, "rho": 0.05},
    "data": {"crop_size": 64, "val_fraction": 0.34},
    "epochs": 2,
    "batch_size": 2,
    "val_batch_size": 4,
    "best_metric": "pq",
}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: a 2-core box shared with other jobs makes 2 threads 3-10x slower
    (OpenMP barriers under contention); both runs of the resume test use the same count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiles(n=9, size=64, seed=0):
    """Random disks of 2 classes on a noisy background; 3 source images."""
    rng = np.random.default_rng(seed)
    images = rng.integers(150, 230, size=(n, size, size, 3), dtype=np.uint8)
    inst = np.zeros((n, size, size), np.int32)
    cls = np.zeros((n, size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for k in range(1, 7):
            cy, cx, r = rng.integers(6, size - 6), rng.integers(6, size - 6), rng.integers(3, 6)
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            inst[i][disk] = k
            cls[i][disk] = 1 + (k % 2)
            images[i][disk] = (90, 40, 140) if k % 2 else (60, 30, 110)
    return TileDataset(
        images=images,
        inst=inst,
        cls=cls,
        sources=[f"img_{i % 3}" for i in range(n)],
        class_names=("round", "dark"),
    )


def _config(**over):
    d = json.loads(json.dumps(TINY))
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) else v
    return TrainConfig.from_dict(d)


def test_epoch_order_and_samples_are_deterministic():
    assert torch.equal(epoch_order(10, 3, 1), epoch_order(10, 3, 1))
    assert not torch.equal(epoch_order(10, 3, 1), epoch_order(10, 3, 2))
    assert sorted(epoch_order(10, 3, 0).tolist()) == list(range(10))
    cfg = _config()
    ds, _ = prepare_dataset(_tiles(), cfg)
    from hvx.training.augment import Augmenter

    tiles = TrainTiles(ds, Augmenter(cfg.augment), 32, seed=5)
    a, b = tiles[(1, 4)], tiles[(1, 4)]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["image"].shape == (32, 32, 3) and a["hv"].shape == (2, 32, 32)
    assert a["np"].dtype == torch.int64 and a["tp"].max() <= 2
    with pytest.raises(ValueError, match=r"expected data.crop_size <= tile size 64x64, got 96"):
        TrainTiles(ds, Augmenter(cfg.augment), 96, seed=5)


def test_prepare_dataset_scale_and_class_map():
    cfg = _config(data={"scale": 0.5, "class_map": {2: 1}, "class_names": ["nucleus"]})
    ds, names = prepare_dataset(_tiles(n=3), cfg)
    assert names == ("nucleus",)
    assert ds.images.shape == (3, 32, 32, 3) and ds.inst.dtype == np.int32
    assert set(np.unique(ds.cls)) <= {0, 1}
    with pytest.raises(ValueError, match=r"expected class ids <= 1 .*got class id 2"):
        prepare_dataset(_tiles(n=3), _config(data={"class_names": ["only"]}))


def test_tiny_run_writes_checkpoints_config_log_and_a_loadable_bundle(tmp_path):
    cfg = _config(epochs=1, optim={"sam": False})  # SAM: the resume test
    result = Trainer(cfg, _tiles(), tmp_path, device="cpu", progress=False).fit()
    assert result.status == "completed" and result.global_step == 3  # 6 train tiles / 2
    assert len(result.history) == 1 and {"pq", "mpq_plus"} <= set(result.best)
    assert (tmp_path / "checkpoints" / "last.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "best.safetensors").is_file()
    assert (
        TrainConfig.from_dict(__import__("yaml").safe_load((tmp_path / "config.yaml").read_text()))
        == cfg
    )
    events = [json.loads(x)["event"] for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert events == ["epoch", "validation"]
    bundle = load_bundle(result.bundle)
    assert bundle.variant == "fast_convnext_atto" and bundle.class_names == ("round", "dark")
    assert bundle.provenance["config"]["name"] == "tiny" and bundle.provenance["seed"] == 0
    assert bundle.metrics["validation"]["pq"] == result.best["pq"]
    model = bundle.build_model()
    out = model(torch.zeros(1, 6, 64, 64))
    assert out["tp"].shape == (1, 3, 64, 64)


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A one-epoch run whose bundle and checkpoint the fine-tuning tests start from."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("parent")
    return Trainer(
        _config(epochs=1, optim={"sam": False}), _tiles(), out, device="cpu", progress=False
    ).fit()


def test_finetune_from_a_bundle_or_checkpoint_starts_from_its_weights(parent, tmp_path, caplog):
    want = load_bundle(parent.bundle).build_model().state_dict()
    for source in (parent.bundle, parent.bundle.parent / "checkpoints" / "best.safetensors"):
        cfg = _config(epochs=1, optim={"sam": False}, model={"finetune_from": str(source)})
        t = Trainer(cfg, _tiles(), tmp_path / "c", device="cpu", progress=False)
        got = t.model.state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want)
        assert t.finetune_source["kind"] == ("bundle" if source.is_dir() else "checkpoint")
    result = t.fit()
    prov = load_bundle(result.bundle).provenance
    assert prov["finetuned_from"]["path"] == str(source)
    # a parent that held out other images is flagged: its scores could be optimistic
    caplog.set_level("WARNING", logger="hvx.training")
    cfg = _config(epochs=1, model={"finetune_from": str(parent.bundle)}, data={"split_seed": 5})
    Trainer(cfg, _tiles(), tmp_path / "d", device="cpu", progress=False)
    warned = [r.getMessage() for r in caplog.records]
    assert any("may have trained on this run's validation images" in m for m in warned)
    caplog.clear()
    renamed = _tiles()
    renamed = TileDataset(
        images=renamed.images,
        inst=renamed.inst,
        cls=renamed.cls,
        sources=renamed.sources,
        class_names=("dark", "round"),
    )
    cfg = _config(epochs=1, model={"finetune_from": str(parent.bundle)})
    Trainer(cfg, renamed, tmp_path / "e", device="cpu", progress=False)
    warned = [r.getMessage() for r in caplog.records]
    assert any("has classes ['round', 'dark'], this run ['dark', 'round']" in m for m in warned)
    assert not any("validation images" in m for m in warned)


def test_resumed_finetune_run_needs_no_parent_and_keeps_its_provenance(parent, tmp_path):
    import shutil

    copy = tmp_path / "parent_copy"
    shutil.copytree(parent.bundle, copy)
    cfg = _config(epochs=2, optim={"sam": False}, model={"finetune_from": str(copy)})
    first = Trainer(cfg, _tiles(), tmp_path / "r", device="cpu", max_minutes=1e-6).fit()
    assert first.status == "time_budget"
    shutil.rmtree(copy)  # the parent is gone: the run's own checkpoint holds everything
    result = Trainer(cfg, _tiles(), tmp_path / "r", device="cpu", resume=True).fit()
    assert result.status == "completed"
    assert load_bundle(result.bundle).provenance["finetuned_from"]["path"] == str(copy)


def test_finetune_from_errors(parent, tmp_path):
    cases = [
        ({"finetune_from": str(tmp_path / "missing")}, FileNotFoundError, "does not exist"),
        (
            {"variant": "fast_convnext_pico", "finetune_from": str(parent.bundle)},
            ValueError,
            "expected a 'fast_convnext_pico' network",
        ),
    ]
    for model, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            Trainer(_config(epochs=1, model=model), _tiles(), tmp_path / "x", device="cpu")
    three = _tiles()
    three = TileDataset(
        images=three.images,
        inst=three.inst,
        cls=np.where(three.cls == 2, 3, three.cls),
        sources=three.sources,
        class_names=("round", "dark", "third"),
    )
    with pytest.raises(ValueError, match="do not fit this 'fast_convnext_atto' network"):
        Trainer(
            _config(epochs=1, model={"finetune_from": str(parent.bundle)}),
            three,
            tmp_path / "y",
            device="cpu",
        )


def _weights(path):
    from hvx.training.checkpoint import load_checkpoint

    return load_checkpoint(path).model


def test_resume_mid_epoch_after_sigint_is_bit_exact(tmp_path, monkeypatch):
    # what fit() must restore: Python's default handler, or SIG_IGN when the
    # tests run as a background job of a non-interactive shell
    before = signal.getsignal(signal.SIGINT)
    cfg = _config(epochs=2)  # 3 steps per epoch, SAM on
    full = Trainer(cfg, _tiles(), tmp_path / "full", device="cpu", progress=False)
    full.fit()
    ref = _weights(tmp_path / "full" / "checkpoints" / "last.safetensors")

    part = Trainer(cfg, _tiles(), tmp_path / "part", device="cpu", progress=False)
    real_step = part.train_step

    def step_then_signal(batch):
        out = real_step(batch)
        if part.global_step == 3:  # the 4th step, the 1st of epoch 2: signal mid-epoch
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(part, "train_step", step_then_signal)
    result = part.fit()
    assert result.status == "interrupted" and result.global_step == 4 and result.bundle is None
    assert signal.getsignal(signal.SIGINT) is before  # restored

    torch.manual_seed(999)  # the resumed run must not depend on the global RNG state
    resumed = Trainer(cfg, _tiles(), tmp_path / "part", device="cpu", progress=False, resume=True)
    assert (resumed.epoch, resumed.step_in_epoch) == (0, 0)  # loaded in fit()
    result = resumed.fit()
    assert result.status == "completed" and result.global_step == 6
    got = _weights(tmp_path / "part" / "checkpoints" / "last.safetensors")
    assert got.keys() == ref.keys()
    for k in ref:
        assert torch.equal(got[k], ref[k]), k


def test_channels_last_is_the_same_training_up_to_rounding(tmp_path):
    # without SAM: with it, the gradient norm's summation order follows the
    # layout, and AdamW's first steps (~lr * sign(g)) magnify such last-bit
    # differences wherever a gradient is near 0, so only rounding-level
    # agreement of a single step could be asked of it
    cfg = _config(epochs=1, optim={"sam": False})  # 3 steps
    runs = {}
    for cl in (False, True):
        t = Trainer(
            cfg.replace({"channels_last": cl}),
            _tiles(),
            tmp_path / str(cl),
            device="cpu",
            progress=False,
        )
        conv = t.model.encoder.body.stem_0.weight
        assert conv.dim() == 4
        assert conv.is_contiguous(memory_format=torch.channels_last) == cl
        assert conv.is_contiguous() != cl
        t.fit()
        runs[cl] = _weights(tmp_path / str(cl) / "checkpoints" / "last.safetensors")
    assert runs[True].keys() == runs[False].keys()
    for k, ref in runs[False].items():
        torch.testing.assert_close(runs[True][k], ref, rtol=1e-4, atol=1e-5, msg=k)
    # the layout may change on --resume
    more = cfg.replace({"channels_last": False, "epochs": 2})
    r = Trainer(more, _tiles(), tmp_path / "True", device="cpu", progress=False, resume=True)
    assert r.fit().status == "completed"


def test_time_budget_stops_with_checkpoint_and_bundle(tmp_path):
    cfg = _config(epochs=5, optim={"sam": False})
    result = Trainer(cfg, _tiles(), tmp_path, device="cpu", progress=False, max_minutes=1e-6).fit()
    assert result.status == "time_budget" and result.global_step == 1
    assert result.bundle is not None and (result.bundle / "model.json").is_file()
    assert len(result.history) == 1  # a final validation for the bundle's metrics
    st = json.loads(
        __import__("safetensors")
        .safe_open(str(tmp_path / "checkpoints" / "last.safetensors"), "pt")
        .metadata()["state"]
    )
    assert (st["epoch"], st["step_in_epoch"]) == (0, 1)


def test_epoch_repeats_are_distinct_passes_and_one_is_the_plain_epoch(tmp_path):
    plain = [k for b in EpochBatches(7, 2, seed=3, epoch=4, start=0) for k in b]
    assert plain == [(4, i) for i in epoch_order(7, 3, 4).tolist()[:6]]
    assert plain == [k for b in EpochBatches(7, 2, 3, 4, 0, repeats=1) for k in b]
    keys = [k for b in EpochBatches(7, 2, seed=3, epoch=1, start=0, repeats=3) for k in b]
    assert len(keys) == 20  # 21 keys, the last incomplete batch dropped
    assert keys[:7] == [(3, i) for i in epoch_order(7, 3, 3).tolist()]
    assert keys[7:14] == [(4, i) for i in epoch_order(7, 3, 4).tolist()]
    assert {p for p, _ in keys} == {3, 4, 5}  # passes 3..5: no overlap with epoch 0 or 2
    late = [k for b in EpochBatches(7, 2, seed=3, epoch=1, start=4, repeats=3) for k in b]
    assert late == keys[8:]
    cfg = _config(epochs=1, data={"epoch_repeats": 2}, optim={"sam": False})
    result = Trainer(cfg, _tiles(), tmp_path, device="cpu", progress=False).fit()
    assert result.global_step == 6  # 2 x 6 train tiles / 2


def test_budget_decay_lowers_the_learning_rate_once_and_needs_a_budget(tmp_path):
    cfg = _config(epochs=2, optim={"sam": False, "budget_decay": 0.5, "gamma": 0.1})
    with pytest.raises(ValueError, match=r"budget_decay=0.5 .* needs max_minutes"):
        Trainer(cfg, _tiles(), tmp_path, device="cpu", progress=False)
    tr = Trainer(cfg, _tiles(), tmp_path, device="cpu", progress=False, max_minutes=10)
    tr._maybe_budget_decay(spent=299.0, budget=600.0)
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    tr._maybe_budget_decay(spent=301.0, budget=600.0)
    tr._maybe_budget_decay(spent=500.0, budget=600.0)
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert tr._state()["budget_decayed"] is True
    result = tr.fit()  # StepLR (step 25) keeps the decayed rate; the flag is checkpointed
    assert result.status == "completed"
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    resumed = Trainer(
        cfg.replace({"epochs": 3}),
        _tiles(),
        tmp_path,
        device="cpu",
        progress=False,
        max_minutes=10,
        resume=True,
    )
    resumed._load(tmp_path / "checkpoints" / "last.safetensors")
    assert resumed.budget_decayed is True
    resumed._maybe_budget_decay(spent=599.0, budget=600.0)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)  # not twice


def test_damaged_checkpoint_and_bad_resume_are_clear_errors(tmp_path):
    cfg = _config(epochs=1, optim={"sam": False})
    Trainer(cfg, _tiles(), tmp_path, device="cpu", progress=False).fit()
    with pytest.raises(ValueError, match=r"already holds a run .* pass --resume"):
        Trainer(cfg, _tiles(), tmp_path, device="cpu", progress=False).fit()
    other = cfg.replace({"optim.lr": 0.5})
    with pytest.raises(ValueError, match=r"cannot resume .*config differs in optim"):
        Trainer(other, _tiles(), tmp_path, device="cpu", progress=False, resume=True).fit()
    last = tmp_path / "checkpoints" / "last.safetensors"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"last.safetensors is truncated or corrupted"):
        Trainer(cfg, _tiles(), tmp_path, device="cpu", progress=False, resume=True).fit()
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found"):
        Trainer(cfg, _tiles(), tmp_path / "new", device="cpu", progress=False, resume=True).fit()


def test_evaluate_on_perfect_probabilities_is_one():
    # the validation path (preprocess -> model -> postprocess -> metrics) end to end,
    # with a model replaced by one that echoes the ground truth
    cfg = _config()
    ds, _ = prepare_dataset(_tiles(n=2), cfg)
    trainer = Trainer(cfg, _tiles(), "unused", device="cpu", progress=False)
    metrics = evaluate(trainer.model, ds, cfg, torch.device("cpu"))
    assert set(metrics) >= {"pq", "mpq_plus", "pq_plus", "tiles"} and metrics["tiles"] == 2
    assert len(metrics["pq_plus"]) == 2


def test_cli_end_to_end_on_real_tiles(consep_dir, tmp_path):
    out = tmp_path / "run"
    argv = [
        "--config",
        "cpu",
        "--data",
        str(consep_dir),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--no-progress",
        "--batch-size",
        "2",
        "--set",
        "data.max_train_tiles=4",
        "--set",
        "data.max_val_tiles=2",
        "--set",
        "data.crop_size=64",
    ]
    assert cli.main([*argv, "--max-minutes", "1e-6"]) == 0  # stops after one step
    first = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert first["event"] == "validation" and first["global_step"] == 1
    # --resume without --config takes OUT/config.yaml; finishes the epoch (2 steps)
    assert (
        cli.main(["--data", str(consep_dir), "--out", str(out), "--resume", "--no-progress"]) == 0
    )
    last = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "validation" and last["global_step"] == 2
    bundle = load_bundle(out / "bundle")
    assert bundle.mpp == pytest.approx(0.25)  # the cpu recipe keeps CoNSeP at 40x
    assert bundle.class_names[0].lower().startswith("misc")
    assert (out / "config.yaml").is_file()


def test_preprocess_impl_is_checked_and_any_gives_the_same_training(tmp_path):
    cfg = _config(epochs=1, optim={"sam": False})
    with pytest.raises(ValueError, match=r"expected preprocess_impl one of .*got 'opencv'"):
        Trainer(cfg, _tiles(), tmp_path / "x", device="cpu", preprocess_impl="opencv")
    runs = [
        Trainer(cfg, _tiles(), tmp_path / impl, device="cpu", progress=False, preprocess_impl=impl)
        for impl in ("numba", "reference")
    ]
    for tr in runs:
        tr.fit()
    a, b = (
        _weights(tmp_path / impl / "checkpoints" / "last.safetensors")
        for impl in ("numba", "reference")
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_freeze_bn_keeps_the_parents_statistics_and_trains_the_rest(parent, tmp_path):
    """model.freeze_bn: running statistics stay the parent's through training and
    validation; weights (BatchNorm affine ones included) still move."""
    want = load_bundle(parent.bundle).build_model().state_dict()
    stats = [k for k in want if k.endswith(("running_mean", "running_var"))]
    assert stats
    for freeze in (True, False):
        cfg = _config(
            epochs=2,
            optim={"sam": False},
            model={"finetune_from": str(parent.bundle), "freeze_bn": freeze},
        )
        t = Trainer(cfg, _tiles(), tmp_path / str(freeze), device="cpu", progress=False)
        t.fit()  # validates after each epoch (the model goes back to training mode)
        got = t.model.state_dict()
        same = [torch.equal(got[k], want[k]) for k in stats]
        assert all(same) if freeze else not any(same)
        bn_weights = [k.replace("running_mean", "weight") for k in stats if "running_mean" in k]
        assert not all(torch.equal(got[k], want[k]) for k in bn_weights)
