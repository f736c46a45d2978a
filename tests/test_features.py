import importlib.util
import os
from pathlib import Path

import pytest

from hvx import features as feat


def test_probe_is_cached_and_complete():
    f1 = feat.features()
    assert f1 is feat.features()
    names = [name for name, _ in f1.rows()]
    assert names == [
        "torch",
        "cuda",
        "triton",
        "tensorrt",
        "onnxruntime",
        "numba",
        "native",
        "timm",
    ]
    assert f1.torch.available
    assert f1.native.available, f1.native.detail


def test_probe_matches_installed_modules():
    f = feat.features()
    assert f.numba.available == (importlib.util.find_spec("numba") is not None)
    assert f.onnxruntime.available == (importlib.util.find_spec("onnxruntime") is not None)
    if importlib.util.find_spec("tensorrt") is None:
        assert not f.tensorrt.available
        assert f.tensorrt.detail == "not installed"


def test_triton_interpreted_under_tests():
    f = feat.features()
    if not f.cuda.available and importlib.util.find_spec("triton") is not None:
        assert f.triton.available
        assert "interpreted" in f.triton.detail


def test_missing_module_reports_reason(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    probe = feat._probe_module("definitely_not_here")
    assert not probe.available
    assert probe.detail == "not installed"


def test_require_native_returns_module():
    native = feat.require_native()
    assert native.max_threads() >= 1


@pytest.mark.cuda
def test_cuda_probe_names_devices():
    f = feat.features()
    assert f.cuda.available and f.cuda.detail


def test_machine_summary_describes_this_host():
    m = feat.machine_summary()
    assert list(m) == ["python", "platform", "cpu", "cpu_count", "cpu_model", "gpu"]
    assert m["cpu_count"] == os.cpu_count()
    assert (m["gpu"] is None) == (not feat.features().cuda.available)
    if os.path.exists("/proc/cpuinfo"):
        names = {
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        }
        assert m["cpu_model"] in (names or {None})
