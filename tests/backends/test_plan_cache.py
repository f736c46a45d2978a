"""Plan cache keys and plan rejection: everything around TensorRT that runs without it."""

import dataclasses
import hashlib
import json
import sys

import numpy as np
import pytest

from hvx.backends import export as ex
from hvx.backends import plan as pl
from hvx.backends.plan import PlanMismatchError, PlanSettings, PlanTarget

H100 = PlanTarget("10.7.0", "NVIDIA H100 80GB HBM3", (9, 0))


@pytest.fixture(scope="module")
def onnx_bytes(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(6, 4, 3, padding=1))

    class Heads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, x):
            f = self.m(x)
            return f[:, :2].softmax(1)[:, 1], f[:, 2:4].tanh(), f.softmax(1)

    path = ex.export_onnx(Heads().eval(), tmp_path_factory.mktemp("o") / "m.onnx", in_chans=6)
    return path.read_bytes()


def test_key_is_stable_and_hex(onnx_bytes):
    k1 = pl.plan_cache_key(onnx_bytes, PlanSettings(), H100)
    k2 = pl.plan_cache_key(onnx_bytes, PlanSettings(), H100)
    assert k1 == k2 and len(k1) == 64 and int(k1, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        {"min_shape": (2, 256, 256)},
        {"opt_shape": (16, 256, 256)},
        {"max_shape": (32, 512, 512)},
        {"max_shape": (16, 512, 768)},
        {"precision": ()},
        {"precision": ("fp16", "tf32")},
        {"workspace_bytes": 1 << 30},
    ],
)
def test_every_setting_changes_the_key(onnx_bytes, change):
    base = pl.plan_cache_key(onnx_bytes, PlanSettings(), H100)
    assert (
        pl.plan_cache_key(onnx_bytes, dataclasses.replace(PlanSettings(), **change), H100) != base
    )


@pytest.mark.parametrize(
    "target",
    [
        PlanTarget("10.8.0", H100.gpu_name, (9, 0)),
        PlanTarget("10.7.0", "NVIDIA A100-SXM4-80GB", (9, 0)),
        PlanTarget("10.7.0", H100.gpu_name, (8, 0)),
    ],
)
def test_every_target_field_changes_the_key(onnx_bytes, target):
    assert pl.plan_cache_key(onnx_bytes, PlanSettings(), target) != pl.plan_cache_key(
        onnx_bytes, PlanSettings(), H100
    )


def test_onnx_bytes_change_the_key(onnx_bytes):
    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    init = proto.graph.initializer[0]
    w = onnx.numpy_helper.to_array(init).copy()
    w.flat[0] += 1.0
    init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    other = proto.SerializeToString()
    assert pl.plan_cache_key(other, PlanSettings(), H100) != pl.plan_cache_key(
        onnx_bytes, PlanSettings(), H100
    )


def test_canonicalisation_makes_equal_inputs_equal(onnx_bytes):
    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    proto.doc_string = "exported on Tuesday"
    proto.producer_version = "9.9.9"
    proto.graph.node[0].doc_string = "trace info"
    cosmetic = proto.SerializeToString()
    assert cosmetic != onnx_bytes
    a = PlanSettings(
        (1, 64, 64), [8, 256, 256], np.array([16, 512, 512]), ["fp16", "FP16"], 4 << 30
    )
    b = PlanSettings()
    assert a == b
    t = PlanTarget(" 10.7.0 ", "NVIDIA  H100 80GB   HBM3", [np.int64(9), 0])
    assert t == H100
    assert pl.plan_cache_key(cosmetic, a, t) == pl.plan_cache_key(onnx_bytes, b, H100)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_shape": (4, 256, 256), "opt_shape": (2, 256, 256)}, "min <= opt <= max"),
        ({"precision": ("int4",)}, "expected precision flags"),
        ({"workspace_bytes": 0}, "workspace_bytes >= 1"),
        ({"max_shape": (32, 256)}, r"expected max_shape as \(N, H, W\)"),
    ],
)
def test_settings_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PlanSettings(**kwargs)


def test_settings_round_trip_and_accepts():
    s = PlanSettings((1, 64, 64), (4, 256, 256), (8, 512, 512))
    assert PlanSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert s.accepts((8, 6, 512, 64)) and not s.accepts((9, 6, 256, 256))
    with pytest.raises(ValueError, match="plan settings: unknown key 'extra'; expected one of"):
        PlanSettings.from_dict({**s.to_dict(), "extra": 1})


def _fake_plan(tmp_path, target=H100, payload=b"not really a plan"):
    meta = {"key": "0" * 64, "settings": PlanSettings().to_dict(), "target": target.to_dict()}
    return pl.write_plan(tmp_path / "model.plan", payload, meta)


def test_fake_plan_round_trip_without_tensorrt(tmp_path):
    plan = _fake_plan(tmp_path)
    data, meta = pl.load_plan(plan, H100)
    assert data == b"not really a plan"
    assert meta["target"] == H100 and meta["plan_sha256"] == hashlib.sha256(data).hexdigest()
    assert pl.sidecar_path(plan).name == "model.plan.json"
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    ("here", "what"),
    [
        (PlanTarget("10.8.0", H100.gpu_name, (9, 0)), "different TensorRT version"),
        (
            PlanTarget("10.7.0", "NVIDIA A100-SXM4-80GB", (8, 0)),
            "different GPU, compute capability",
        ),
        (PlanTarget("10.7.0", H100.gpu_name, (9, 1)), "different compute capability"),
    ],
)
def test_plan_for_another_gpu_or_version_is_rejected_before_tensorrt(
    tmp_path, monkeypatch, here, what
):
    plan = _fake_plan(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # any TensorRT import would fail
    with pytest.raises(PlanMismatchError, match=f"was built for 'NVIDIA H100.*{what}.*rebuild"):
        pl.load_plan(plan, here)
    from hvx.backends.tensorrt import TensorRTBackend

    with pytest.raises(PlanMismatchError, match="TensorRT plans only run where they were built"):
        TensorRTBackend(plan, target=here)  # rejected before any TensorRT import or call


def test_plan_missing_sidecar_or_corrupt(tmp_path):
    plan = _fake_plan(tmp_path)
    plan.write_bytes(b"not really a plaN")
    with pytest.raises(ValueError, match="truncated or replaced"):
        pl.load_plan(plan, H100)
    pl.sidecar_path(plan).write_text("{}")
    with pytest.raises(ValueError, match="expected sidecar fields"):
        pl.load_plan(plan, H100)
    pl.sidecar_path(plan).write_text("{nope")
    with pytest.raises(ValueError, match="expected JSON"):
        pl.load_plan(plan, H100)
    pl.sidecar_path(plan).unlink()
    with pytest.raises(FileNotFoundError, match=r"expected the sidecar model\.plan\.json"):
        pl.load_plan(plan, H100)
    with pytest.raises(FileNotFoundError, match="plan not found"):
        pl.load_plan(tmp_path / "none.plan", H100)


def test_plan_of_unknown_format_version(tmp_path):
    plan = _fake_plan(tmp_path)
    side = pl.sidecar_path(plan)
    doc = json.loads(side.read_text())
    doc["format_version"] = 99
    side.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="version 99"):
        pl.load_plan(plan, H100)


def test_timing_cache_path_is_per_target(tmp_path):
    a = pl.timing_cache_path(tmp_path, H100)
    b = pl.timing_cache_path(tmp_path, PlanTarget("10.8.0", H100.gpu_name, (9, 0)))
    assert a != b and a.parent == tmp_path and " " not in a.name


@pytest.mark.tensorrt
def test_build_and_run_plan_matches_torch(tmp_path, onnx_bytes):
    """Needs TensorRT + CUDA: never executed where this was written."""
    import torch

    from hvx.backends.onnxruntime import OnnxRuntimeBackend
    from hvx.backends.tensorrt import TensorRTBackend

    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(onnx_bytes)
    settings = PlanSettings((1, 32, 32), (2, 64, 64), (4, 128, 128))
    plan = pl.build_tensorrt_plan(onnx_path, tmp_path / "cache", settings)
    assert pl.timing_cache_path(tmp_path / "cache", PlanTarget.current()).is_file()
    again = pl.build_tensorrt_plan(onnx_path, tmp_path / "cache", settings)  # cache hit
    assert again == plan
    backend = TensorRTBackend(plan)
    assert backend.max_batch == 4  # the profile's largest N
    x = torch.rand(2, 6, 64, 96)
    got = backend.run(x.cuda()).numpy()
    ref = OnnxRuntimeBackend(onnx_bytes).run(x)
    assert np.abs(got.hv - ref.hv).max() < 1e-2
    with pytest.raises(ValueError, match="plan's profile"):
        backend.run(torch.rand(8, 6, 64, 64).cuda())
