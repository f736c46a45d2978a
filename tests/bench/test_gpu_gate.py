"""benchmarks/gpu_gate.py (the GPU script's precision gate) runs on the CPU too."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gpu_gate():
    spec = importlib.util.spec_from_file_location("gpu_gate", ROOT / "benchmarks/gpu_gate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("one_torch_thread")
def test_gate_on_cpu_with_samples(gpu_gate, tmp_path, capsys):
    out = tmp_path / "gate.json"
    argv = ["--device", "cpu", "--precisions", "bf16", "fp16", "--rounds", "1", "--out", str(out)]
    assert gpu_gate.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["tiles"] == "shipped samples"
    bf16 = doc["results"]["bf16"]
    assert bf16["gate"]["tiles"] == 4 and bf16["gate"]["tp"] > 0
    assert bf16["speedup_vs_fp32_paired"]["n"] == 1
    assert "fp32" in doc["results"]["fp16"]["error"]  # torch refuses fp16 on the CPU
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
