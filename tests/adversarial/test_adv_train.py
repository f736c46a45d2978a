"""Findings 8 and 11 (issue 23) for ``hvx-train``, and 11's truncated ONNX cache.

8: ``hvx-train --resume --data OTHER`` continued silently and recorded the wrong
   provenance; now refused unless ``--force``, and a forced resume records both.
11: float instance labels ended in a TypeError traceback; a truncated cached ONNX
   export failed every run until deleted.
"""

import numpy as np
import pytest

from hvx.training.cli import main


def _conic(folder, seed=0, dtype=np.int32):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    np.save(folder / "images.npy", rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8))
    lab = np.zeros((4, 64, 64, 2), dtype)
    lab[:, 10:20, 10:20] = 1
    np.save(folder / "labels.npy", lab)
    rows = "".join(f"img{i // 2}-{i}\n" for i in range(4))
    (folder / "patch_info.csv").write_text("patch_info\n" + rows)
    return folder


class _FakeTrainer:
    """Stands in for the Trainer: records what the CLI hands it."""

    last = None

    def __init__(self, config, data, out, **kw):
        self.data_source, self.kw = str(data), kw
        _FakeTrainer.last = self

    def fit(self):
        from hvx.training.trainer import TrainResult

        return TrainResult("interrupted", 0, 0, None, None, [])


def _args(data, out, *extra):
    return ["--config", "cpu", "--data", str(data), "--out", str(out), "--no-progress", *extra]


def test_resume_with_other_data_is_refused_unless_force(tmp_path, monkeypatch, capsys):
    import hvx.training.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "Trainer", _FakeTrainer)
    a, b = _conic(tmp_path / "a", 0), _conic(tmp_path / "b", 1)
    out = tmp_path / "run"
    assert main(_args(a, out)) == 130  # fresh run (fake: "interrupted") records its data
    assert (out / "data.json").is_file()
    capsys.readouterr()
    assert main(_args(b, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert "different data" in err and "--force" in err and "Traceback" not in err
    assert main(_args(a, out, "--resume")) == 130  # the same data resumes
    assert main(_args(b, out, "--resume", "--force")) == 130
    src = _FakeTrainer.last.data_source
    assert str(a) in src and str(b) in src  # provenance names both datasets


def test_multi_dataset_config_runs_without_data_and_checks_resume(tmp_path, monkeypatch, capsys):
    """A config listing data.datasets needs no --data (it crashed on Path(None))."""
    import hvx.training.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "Trainer", _FakeTrainer)
    a, b = _conic(tmp_path / "a", 0), _conic(tmp_path / "b", 1)
    cfg = tmp_path / "multi.yaml"
    cfg.write_text(f"name: multi\ndata:\n  datasets:\n    - {{path: {a}}}\n    - {{path: {b}}}\n")
    out = tmp_path / "run"
    args = ["--config", str(cfg), "--out", str(out), "--no-progress"]
    assert main(args) == 130
    assert str(a) in (out / "data.json").read_text() and str(b) in (out / "data.json").read_text()
    assert main([*args, "--resume"]) == 130  # same datasets resume
    lab = np.load(b / "labels.npy")
    lab[0, 40, 40, 0] = 9
    np.save(b / "labels.npy", lab)
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2  # one of them edited: refused
    assert "different data" in capsys.readouterr().err
    cfg.write_text(f"name: multi\ndata:\n  datasets:\n    - {{path: {tmp_path / 'nope'}}}\n")
    assert main(["--config", str(cfg), "--out", str(tmp_path / "r2"), "--no-progress"]) == 2
    assert "data.datasets" in capsys.readouterr().err


def test_data_identity_sees_an_edit_in_place(tmp_path):
    from hvx.training.checkpoint import data_identity

    a = _conic(tmp_path / "a", 0)
    before = data_identity(a)
    lab = np.load(a / "labels.npy")
    lab[2, 30, 30, 0] = 7
    np.save(a / "labels.npy", lab)
    assert data_identity(a) != before


def test_float_labels_are_one_line(tmp_path, capsys):
    data = _conic(tmp_path / "f", 0, dtype=np.float32)
    assert main(_args(data, tmp_path / "run", "--max-minutes", "0.05")) == 2
    err = capsys.readouterr().err
    assert "integer" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_truncated_onnx_cache_is_rebuilt(bundle, tmp_path, caplog):
    pytest.importorskip("onnxruntime", reason="onnxruntime is an optional backend")
    from hvx.engine import Engine

    cache = tmp_path / "cache"
    Engine.load(bundle, backend="onnxruntime", device="cpu", cache_dir=cache)
    (path,) = (cache / "onnx").glob("*.onnx")
    path.write_bytes(path.read_bytes()[:1000])  # a kill during the export
    eng = Engine.load(bundle, backend="onnxruntime", device="cpu", cache_dir=cache)
    assert eng.backend == "onnxruntime" and path.stat().st_size > 1000
    assert eng.infer(np.zeros((1, 64, 64, 3), np.uint8)).inst.shape == (1, 64, 64)
