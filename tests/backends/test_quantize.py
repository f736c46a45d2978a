"""The low-precision CPU paths: gate arithmetic, int8 quantization, bf16, auto-selection."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from hvx.backends import quantize as q
from hvx.metrics import pq_stats


def _blobs(rng, shape=(64, 64), n=12, r=4):
    """An instance map of ``n`` non-overlapping discs and a type map (types 1..4)."""
    inst = np.zeros(shape, np.int32)
    typ = np.zeros(shape, np.uint8)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    centres = [(8 + 16 * (k // 4), 8 + 16 * (k % 4)) for k in range(n)]
    for k, (cy, cx) in enumerate(centres, start=1):
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= (r + rng.integers(0, 3)) ** 2
        inst[disc] = k
        typ[disc] = 1 + rng.integers(0, 4)
    return inst, typ


def test_identical_maps_pass_with_pq_one():
    inst, typ = _blobs(np.random.default_rng(0))
    g = q.compare_instances(inst[None], typ[None], inst[None], typ[None], num_types=5)
    assert (g.pq, g.tp, g.fp, g.fn, g.flips) == (pytest.approx(1.0), 12, 0, 0, 0)
    assert g.passed


@pytest.mark.parametrize("seed", range(4))
def test_pq_agrees_with_hvx_metrics(seed):
    rng = np.random.default_rng(seed)
    inst, typ = _blobs(rng)
    other = inst.copy()
    other[rng.random(inst.shape) < 0.15] = 0  # eroded nuclei, some lost
    other[inst == 3] = 0  # one missed
    other[40:44, 60:64] = 99  # one spurious
    other = np.where(np.roll(inst, 2, axis=1) == 5, 5, other)  # one shifted
    g = q.compare_instances(inst[None], typ[None], other[None], typ[None], num_types=5)
    ref = pq_stats(inst, other)
    assert (g.tp, g.fp, g.fn) == (ref.tp, ref.fp, ref.fn)
    assert g.pq == pytest.approx(ref.pq, abs=1e-5)


def test_pq_is_pooled_over_tiles():
    rng = np.random.default_rng(1)
    a, ta = _blobs(rng)
    b = a.copy()
    b[b == 2] = 0
    g = q.compare_instances(
        np.stack([a, a]), np.stack([ta, ta]), np.stack([a, b]), np.stack([ta, ta]), 5
    )
    assert (g.tp, g.fn, g.tiles) == (23, 1, 2)
    assert g.pq == pytest.approx(23 / (23 + 0.5), abs=1e-9)


def test_class_flips_are_counted_and_fail_the_gate():
    inst, typ = _blobs(np.random.default_rng(2))
    flipped = typ.copy()
    flipped[inst == 4] = 1 + (typ[inst == 4][0] % 4)  # one nucleus changes type
    g = q.compare_instances(inst[None], typ[None], inst[None], flipped[None], num_types=5)
    assert g.flips == 1 and g.flip_fraction == pytest.approx(1 / 12)
    assert g.pq == pytest.approx(1.0) and not g.passed


def test_empty_maps_agree_and_bad_shapes_are_refused():
    z = np.zeros((2, 8, 8), np.int32)
    assert q.compare_instances(z, z, z, z, 5).pq == 1.0
    with pytest.raises(ValueError, match=r"expected four \(N, H, W\) maps"):
        q.compare_instances(z, z, z[:1], z, 5)


def test_cpu_bf16_flags_reads_cpuinfo(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor : 0\nflags : fpu avx2 avx512f amx_bf16 amx_tile\n")
    assert q.cpu_bf16_flags(f) == ["amx_bf16"]
    f.write_text("flags : fpu avx2\n")
    assert q.cpu_bf16_flags(f) == []
    assert q.cpu_bf16_flags(tmp_path / "absent") == []


def test_bf16_batchnorm_folding_matches_unfolded_in_fp32():
    from hvx.backends.cpu_bf16 import _fold_batchnorms

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()
    )
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 300.0)
        net[1].weight.uniform_(0.5, 2)
    net.eval()
    x = torch.randn(2, 3, 11, 13)
    ref = net(x)
    import copy

    folded = _fold_batchnorms(copy.deepcopy(net))
    assert isinstance(folded[1], torch.nn.Identity)
    torch.testing.assert_close(folded(x), ref, rtol=1e-5, atol=1e-5)


def test_bf16_backend_is_close_to_fp32_and_keeps_shapes(three_heads):
    from hvx.backends.cpu_bf16 import CpuBf16Backend

    be = CpuBf16Backend(three_heads, max_shapes=1)
    for shape in [(1, 6, 16, 24), (2, 6, 8, 8), (1, 6, 16, 24)]:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
        got = be.run(x)
        with torch.no_grad():
            ref = three_heads(x)
        for a, b in zip((got.np_prob, got.hv, got.tp_prob), ref, strict=True):
            assert a.dtype == torch.float32 and a.shape == b.shape
            assert (a - b).abs().max() < 0.05
    assert len(be._traced) == 1  # LRU of one shape
    with pytest.raises(ValueError, match="non-empty"):
        be.run(torch.zeros(0, 6, 8, 8))


# ---------------------------------------------------------------- on the real default model


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """A copy of the default bundle with an int8 model and its gate (shipped samples)."""
    from hvx.assets import default_model_path
    from hvx.bundle import load_bundle

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("b") / "default"
    shutil.copytree(default_model_path(), path)
    (path / q.RECORD_FILE).unlink(missing_ok=True)
    cache = tmp_path_factory.mktemp("cache")
    bundle = load_bundle(path)
    entry = q.build_lowp(bundle, "int8", cache_dir=cache)
    return bundle, cache, entry


def test_build_int8_writes_model_and_record(gated):
    bundle, _, entry = gated
    rec = q.read_record(bundle.path)
    assert rec["int8"] == entry
    assert (bundle.path / q.INT8_FILE).is_file() and entry["file"] == q.INT8_FILE
    assert entry["calibration"]["validation"] == "shipped samples"
    g = entry["gate"]
    assert (
        g["tiles"] == 4
        and g["tp"] > 0
        and g["passed"] == (g["pq"] >= 0.98 and g["flip_fraction"] <= 0.01)
    )


def test_int8_model_runs_and_is_near_fp32(gated):
    from hvx import _artifacts
    from hvx.backends.onnxruntime import OnnxRuntimeBackend

    bundle, cache, _ = gated
    x = np.random.default_rng(0).random((1, 6, 64, 96), dtype=np.float32)
    got = OnnxRuntimeBackend(bundle.path / q.INT8_FILE, precision="int8").run(x)
    ref = OnnxRuntimeBackend(_artifacts.onnx_for_bundle(bundle, cache)).run(x)
    assert got.np_prob.shape == (1, 64, 96) and np.isfinite(got.tp_prob).all()
    assert np.abs(got.np_prob - ref.np_prob).mean() < 0.05


def test_gate_refuses_a_corrupted_model(gated):
    from hvx import _artifacts
    from hvx.backends.base import HeadOutputs
    from hvx.backends.onnxruntime import OnnxRuntimeBackend

    bundle, cache, _ = gated
    ref = OnnxRuntimeBackend(_artifacts.onnx_for_bundle(bundle, cache))

    class Corrupted:  # fp32 with noisy hv maps and a lower foreground probability
        def run(self, x):
            h = ref.run(x)
            noise = np.random.default_rng(0).normal(0, 0.3, h.hv.shape).astype(np.float32)
            return HeadOutputs(h.np_prob * 0.9, h.hv + noise, h.tp_prob)

    tiles, _, _ = q.gate_tiles(bundle)
    assert q.run_gate(bundle, ref, ref, tiles).pq == pytest.approx(1.0)
    bad = q.run_gate(bundle, ref, Corrupted(), tiles)
    assert bad.pq < 0.98 and not bad.passed


def _forge(bundle, precision, passed):
    gate = q.GateResult(pq=0.99 if passed else 0.5, tp=10, fp=0, fn=0, flips=0, tiles=1)
    f = bundle.path / q.INT8_FILE if precision == "int8" else None
    q.write_record(bundle.path, precision, q.record_entry(gate, file=f, calibration=None))


def test_auto_selection_obeys_the_record(gated, monkeypatch, caplog):
    import hvx

    bundle, cache, _ = gated
    saved = (bundle.path / q.RECORD_FILE).read_text()
    try:
        monkeypatch.setattr(q, "cpu_bf16_flags", lambda *a: [])
        _forge(bundle, "int8", passed=False)
        assert q.auto_cpu_precision(bundle.path) == "fp32"
        assert hvx.Engine.load(bundle.path, device="cpu", cache_dir=cache).precision == "fp32"
        _forge(bundle, "int8", passed=True)
        _forge(bundle, "bf16", passed=True)
        assert q.auto_cpu_precision(bundle.path) == "int8"  # no native bf16 here (patched)
        eng = hvx.Engine.load(bundle.path, device="cpu", cache_dir=cache)
        assert (eng.backend, eng.precision) == ("onnxruntime", "int8")
        # backend="torch" cannot run int8: auto falls back to fp32
        assert hvx.Engine.load(bundle.path, backend="torch").precision == "fp32"
        monkeypatch.setattr(q, "cpu_bf16_flags", lambda *a: ["amx_bf16"])
        assert q.auto_cpu_precision(bundle.path) == "bf16"
        # a changed model.json voids the record
        mj = bundle.path / "model.json"
        text = mj.read_text()
        try:
            mj.write_text(text + "\n")
            with caplog.at_level(logging.WARNING):
                assert q.auto_cpu_precision(bundle.path) == "fp32"
            assert "another model.json" in caplog.text
        finally:
            mj.write_text(text)
    finally:
        (bundle.path / q.RECORD_FILE).write_text(saved)


def test_explicit_precisions_and_their_errors(gated, tmp_path, monkeypatch):
    import hvx

    bundle, cache, _ = gated
    eng = hvx.Engine.load(bundle.path, precision="int8", cache_dir=cache)
    assert (eng.backend, eng.precision) == ("onnxruntime", "int8")
    with pytest.raises(ValueError, match="for precision='int8'"):
        hvx.Engine.load(bundle.path, backend="torch", precision="int8")
    bare = tmp_path / "bare"
    shutil.copytree(bundle.path, bare)
    (bare / q.INT8_FILE).unlink()
    with pytest.raises(ValueError, match=r"hvx build .* --int8"):
        hvx.Engine.load(bare, precision="int8")
    monkeypatch.setattr(q, "cpu_bf16_flags", lambda *a: [])
    with pytest.raises(ValueError, match="native bf16"):
        hvx.Engine.load(bundle.path, precision="bf16")
    with pytest.raises(ValueError, match="'int8' or 'bf16'"):
        hvx.Engine.load(bundle.path, precision="int4")


def test_record_validation(tmp_path, gated):
    bundle, _, _ = gated
    d = tmp_path / "b"
    shutil.copytree(bundle.path, d)
    rec = json.loads((d / q.RECORD_FILE).read_text())
    rec["int8"]["extra"] = 1
    (d / q.RECORD_FILE).write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="expected keys"):
        q.read_record(d)
    (d / q.RECORD_FILE).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="expected format"):
        q.read_record(d)


def test_build_cli_reports_bad_data_with_exit_2(gated, tmp_path, caplog):
    from hvx.cli import main

    bundle, cache, _ = gated
    empty = tmp_path / "nodata"
    (empty / "images").mkdir(parents=True)
    with caplog.at_level(logging.ERROR):
        code = main(
            ["build", str(bundle.path), "--int8", "--data", str(empty), "--cache-dir", str(cache)]
        )
    assert code == 2
    assert (
        "int8 not built" in caplog.text
        and "expected tiles of the validation sources" in caplog.text
    )
