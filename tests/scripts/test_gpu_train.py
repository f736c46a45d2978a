"""scripts/gpu_train.sh end to end on the CPU: launch, stop by budget, pack, rejoin.

A GPU session is rare and short, so the script it runs is exercised here with a
tiny run (one of the three, on the CPU, a few steps) instead.
"""

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_train.sh"
TINY = (
    "--set batch_size=2 --set data.crop_size=64 --set data.max_train_tiles=6 "
    "--set data.max_val_tiles=4 --set data.epoch_repeats=1 --set val_batch_size=4"
)


def _env(tmp_path: Path, data: Path, runs: str) -> dict:
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "PYTHON": sys.executable,
        "HVX_CONSEP_DIR": str(data),
        "HVX_GPU_TRAIN_DEVICE": "cpu",
        "HVX_GPU_TRAIN_MINUTES": "0.15",
        "HVX_GPU_TRAIN_RUNS": runs,
        "HVX_GPU_TRAIN_EXTRA": TINY,
        "HVX_GPU_RUNS": str(tmp_path / "runs"),
        "OMP_NUM_THREADS": "1",
    }


def test_one_run_trains_stops_and_comes_back_packed(consep_dir, tmp_path):
    env, dest = _env(tmp_path, consep_dir, "atto-ft"), tmp_path / "out"
    start = subprocess.run(
        ["bash", str(SCRIPT), "start", str(dest)], env=env, capture_output=True, text=True
    )
    assert start.returncode == 0, start.stderr
    assert "launched atto-ft" in start.stdout and "launched pico" not in start.stdout
    finish = subprocess.run(
        ["bash", str(SCRIPT), "finish", str(dest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finish.returncode == 0, finish.stderr
    assert "time_budget" in finish.stdout
    blob = b"".join(p.read_bytes() for p in sorted(dest.glob("train.tar.part-*")))
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        names = set(tar.getnames())
        summary = json.load(tar.extractfile("summary.json"))
        ship_log = tar.extractfile("atto-ft/ship.log").read().decode()
    assert {"atto-ft/bundle/model.json", "atto-ft/log.jsonl", "atto-ft/console.log"} <= names
    # float16 when ship_default_model's parity check passes, else the float32 bundle
    assert summary["atto-ft"]["bundle"] in (
        "float16",
        "float32 (float16 refused or failed: ship.log)",
    )
    assert "PQ vs fp32" in ship_log
    assert summary["atto-ft"]["best_validation"]["tiles"] == 4


def test_an_unknown_run_is_refused(consep_dir, tmp_path):
    p = subprocess.run(
        ["bash", str(SCRIPT), "start", str(tmp_path / "out")],
        env=_env(tmp_path, consep_dir, "atto-ft bogus"),
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2 and "unknown run 'bogus'" in p.stderr
