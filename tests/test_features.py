import importlib.util

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
