"""benchmarks/summarize.py renders hvx-bench results and other result files."""

import importlib.util
import json
from pathlib import Path

import pytest

from hvx.bench import harness
from hvx.provenance import provenance

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def summarize(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("summarize", ROOT / "benchmarks/summarize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "benchmarks" / "results")
    monkeypatch.setattr(module, "OUT", tmp_path / "BENCHMARKS.md")
    return module


def _doc(date, gpu, speedup):
    t = harness.Timing(10.0, 9.0, 11.0, 8.0, 3)
    rec = harness.Record("e2e", "engine", 8, 256, t, baseline="ref", speedup=speedup)
    rec.extra = {"variant": "fast_convnext_atto", "weights_note": "random weights"}
    prov = {**provenance(), "date": date, "gpu": gpu}
    run = {"argv": ["--quick"], "load_average_start": [3.0, 2.0, 1.0], "note": None}
    return {"schema": "hvx-bench/1", "provenance": prov, "run": run, "records": [rec.to_json()]}


def test_latest_result_per_machine_and_stage(summarize, tmp_path):
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "a.json").write_text(json.dumps(_doc("2026-11-01T00:00:00", None, 2.0)))
    (results / "b.json").write_text(json.dumps(_doc("2026-11-02T00:00:00", None, 3.0)))
    (results / "c.json").write_text(json.dumps(_doc("2026-10-01T00:00:00", "NVIDIA H100", 9.0)))
    (results / "other.json").write_text(
        json.dumps({"benchmark": "x", "provenance": {"date": "2026-11-03"}, "speedup_median": 4.0})
    )
    text = summarize.render()
    assert "**3.00x**" in text and "**2.00x**" not in text  # the newer CPU run wins
    assert "### GPU NVIDIA H100" in text and "**9.00x**" in text
    assert text.index("GPU NVIDIA H100") < text.index("### CPU")
    assert "load average 3.0" in text and "Weights: random weights." in text
    assert "speedup_median 4.0x" in text


def test_gpu_check_script_parses_and_budgets_every_step():
    import subprocess

    script = ROOT / "benchmarks" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    steps = [line for line in text.splitlines() if line.lstrip().startswith("step ")]
    assert len(steps) >= 5 and all(line.split()[2].isdigit() for line in steps)
    assert "HVX_GPU_CHECK_BUDGET:-540" in text and "pytest -m cuda" in text


def test_superseded_files_are_listed_apart_with_their_reason(summarize, tmp_path):
    results = tmp_path / "benchmarks" / "results"
    (results / "superseded").mkdir(parents=True)
    (results / "new.json").write_text(json.dumps(_doc("2026-11-02T00:00:00", None, 1.5)))
    (results / "superseded" / "old.json").write_text(
        json.dumps(_doc("2026-11-03T00:00:00", None, 28.0))
    )
    (results / "superseded" / "REASONS.json").write_text(json.dumps({"old.json": "did not hold"}))
    text = summarize.render()
    assert "**1.50x**" in text and "**28.00x**" not in text  # newer but superseded
    assert "## Superseded results" in text and "did not hold" in text


def test_paired_spread_and_precision_section(summarize, tmp_path):
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    doc = _doc("2026-11-02T00:00:00", None, 2.5)
    doc["records"][0]["extra"]["paired_ratio"] = {"median": 2.5, "p25": 2.25, "p75": 2.75}
    (results / "a.json").write_text(json.dumps(doc))
    r = {"median": 1.9, "p25": 1.8, "p75": 2.0, "min": 1.5, "n": 5}
    one = {"median": 1.0, "p25": 1.0, "p75": 1.0, "min": 1.0, "n": 5}
    prec = {
        "benchmark": "cpu-precision",
        "provenance": {**provenance(), "date": "2026-11-02T00:00:00"},
        "cpu_bf16_flags": ["amx_bf16"],
        "rounds": 5,
        "loadavg_start": [1.0, 1.0, 1.0],
        "gate_record": None,
        "runs": [
            {
                "threads": {"requested": 1},
                "batches": [
                    {
                        "batch": 1,
                        "ms_per_tile": {"ort_fp32": 80.0, "torch_bf16": 42.0},
                        "ratio_vs_ort_fp32": {"ort_fp32": one, "torch_bf16": r},
                        "ratio_vs_torch_fp32": {"ort_fp32": one, "torch_bf16": r},
                        "loadavg_before": [1.0, 1.0, 1.0],
                        "loadavg_after": [2.0, 1.0, 1.0],
                    }
                ],
            }
        ],
    }
    (results / "p.json").write_text(json.dumps(prec))
    text = summarize.render()
    assert "**2.50x** paired, p25-p75 2.25-2.75" in text
    assert "| 1 | 1 | torch_bf16 | 42.0 | 1.90x (1.80-2.00) |" in text
