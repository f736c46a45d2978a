"""scripts/pack_runs.py: best runs first within the budget, parts that rejoin, logs always."""

import importlib.util
import io
import json
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("pack_runs", ROOT / "scripts" / "pack_runs.py")
pack_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pack_runs)


def _run(root: Path, name: str, pqs: list[float], weights_mb: float | None) -> None:
    run = root / name
    run.mkdir(parents=True)
    recs = [{"event": "epoch", "epoch": 1}] + [
        {"event": "validation", "pq": pq, "epoch": k} for k, pq in enumerate(pqs)
    ]
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    (run / "config.yaml").write_text(f"name: {name}\n")
    (root / f"{name}.log").write_text(f"console of {name}\n")
    if weights_mb is not None:
        (run / "bundle").mkdir()
        (run / "bundle" / "model.json").write_text("{}")
        (run / "bundle" / "weights.safetensors").write_bytes(b"\0" * int(weights_mb * 1e6))


def test_best_runs_first_within_the_budget_and_the_parts_rejoin(tmp_path):
    runs, dest = tmp_path / "runs", tmp_path / "out"
    _run(runs, "small", [0.1, 0.30], 1.0)
    _run(runs, "big", [0.2, 0.35, 0.33], 3.0)
    _run(runs, "late", [0.05], 2.5)  # fits only if the others left room: it does not
    _run(runs, "broken", [], None)  # no validation, no bundle: logs still packed
    assert pack_runs.best_validation(runs / "big")["pq"] == 0.35
    assert pack_runs.best_validation(runs / "broken") is None
    rc = pack_runs.main(
        [str(runs), str(dest), "--budget-mb", "4.5", "--part-mb", "1.5", "--no-half"]
    )
    assert rc == 0
    parts = sorted(dest.glob("train.tar.part-*"))
    assert [p.name[-2:] for p in parts] == ["aa", "ab", "ac"]
    assert all(p.stat().st_size <= 1.5e6 for p in parts)
    assert not list(dest.glob(".*tmp"))
    blob = b"".join(p.read_bytes() for p in parts)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        names = set(tar.getnames())
        summary = json.load(tar.extractfile("summary.json"))
    assert {"big/bundle/weights.safetensors", "small/bundle/weights.safetensors"} <= names
    assert not any(n.startswith("late/bundle") for n in names)
    assert {"late/log.jsonl", "broken/console.log", "broken/config.yaml"} <= names
    assert summary["big"]["bundle"] == "float32"
    assert summary["late"]["bundle"].startswith("not packed (float32; budget 4.5 MB)")
    assert summary["broken"]["best_validation"] is None
