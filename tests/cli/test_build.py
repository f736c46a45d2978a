"""``hvx build``: ONNX export of a bundle (CPU); the TensorRT path where TensorRT exists."""

import json

import pytest

from hvx.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_build_onnx_is_cached_and_copied(bundle, tmp_path, capsys):
    cache = tmp_path / "cache"
    args = ["build", str(bundle), "--onnx", "--cache-dir", str(cache), "--out", str(tmp_path / "o")]
    assert main(args) == 0
    first = capsys.readouterr().out
    onnx_path = first.split("onnx: ")[1].strip()
    assert onnx_path.startswith(str(cache / "onnx")) and (tmp_path / "o" / "model.onnx").is_file()
    stamp = (tmp_path / "o" / "model.onnx").stat().st_size
    assert main(args) == 0  # second run: the cached export is reused
    assert capsys.readouterr().out == first
    assert (tmp_path / "o" / "model.onnx").stat().st_size == stamp


def test_build_bad_arguments(bundle, tmp_path, caplog):
    assert main(["build", str(tmp_path / "absent")]) == 2
    assert "model bundle not found" in caplog.text
    assert main(["build", str(bundle), "--min-batch", "4", "--opt-batch", "2"]) == 2
    assert "min <= opt <= max" in caplog.text


def test_build_tensorrt_without_tensorrt_fails_clearly(bundle, tmp_path, caplog):
    from hvx.features import features

    if features().tensorrt.available:
        pytest.skip("TensorRT is available here")
    assert main(["build", str(bundle), "--tensorrt", "--cache-dir", str(tmp_path)]) == 2
    assert "TensorRT plan not built" in caplog.text


@pytest.mark.tensorrt
def test_build_tensorrt_plan(bundle, tmp_path, capsys):
    """Needs TensorRT + CUDA: never executed where this was written."""
    args = ["build", str(bundle), "--tensorrt", "--min-size", "64", "--opt-size", "128"]
    args += [
        "--max-size",
        "256",
        "--max-batch",
        "4",
        "--opt-batch",
        "2",
        "--cache-dir",
        str(tmp_path),
    ]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    side = json.loads((tmp_path / "o" / "model.plan.json").read_text())
    assert side["settings"]["max_shape"] == [4, 256, 256] and side["model"]["num_types"] == 3


def test_build_defaults_are_the_engine_profile():
    """`hvx build --tensorrt` without options builds the plan Engine.load would look up."""
    from hvx.backends.plan import PlanSettings
    from hvx.cli import build_parser

    a = build_parser().parse_args(["build", "b"])
    got = PlanSettings(
        (a.min_batch, a.min_size, a.min_size),
        (a.opt_batch, a.opt_size, a.opt_size),
        (a.max_batch, a.max_size, a.max_size),
        ("fp16",),
        int(a.workspace_gb * 2**30),
    )
    assert got == PlanSettings()


def test_build_precision_flags():
    from hvx.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["build", "b"]).precision == "auto"
    assert parse(["build", "b", "--fp16"]).precision == "fp16"
    assert parse(["build", "b", "--fp32"]).precision == "fp32"
    with pytest.raises(SystemExit):
        parse(["build", "b", "--fp16", "--fp32"])


@pytest.mark.parametrize(
    ("flag", "check", "want"),
    [
        ([], "fp16", ("fp16",)),  # auto, fp16 keeps the maps
        ([], "fp32", ("tf32",)),  # auto, fp16 breaks them: what Engine.load would use
        (["--fp16"], None, ("fp16",)),  # forced: no check
        (["--fp32"], None, ()),
    ],
)
def test_build_tensorrt_precision_follows_the_fp16_check(
    bundle, tmp_path, monkeypatch, flag, check, want
):
    """The plan's precision without TensorRT: the GPU steps are replaced by recorders."""
    import hvx._artifacts as art
    import hvx.backends.plan as plan
    import hvx.precision as hp

    calls = []
    monkeypatch.setattr(plan.PlanTarget, "current", classmethod(lambda cls: None))
    monkeypatch.setattr(art, "onnx_for_bundle", lambda b, c: tmp_path / "m.onnx")

    def fake_check(b, dev, path):
        calls.append(dev)
        return check

    def fake_plan(b, settings, cache, force=False):
        calls.append(settings.precision)
        return tmp_path / "m.plan"

    monkeypatch.setattr(hp, "auto_cuda_precision", fake_check)
    monkeypatch.setattr(art, "plan_for_bundle", fake_plan)
    assert main(["build", str(bundle), "--tensorrt", *flag]) == 0
    assert calls == (["cuda", want] if check else [want])
