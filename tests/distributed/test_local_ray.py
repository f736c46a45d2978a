"""A local Ray (``ray.init(num_cpus=2)``) runs a cohort: outputs equal the single-process
run byte for byte; a rerun does nothing; changed parameters on reuse are refused; a
driver killed mid-run leaves committed regions that the same command resumes from."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REGION_PX, assert_same_outputs, bounded, descendants, kill_pids, run_cohort

ray = pytest.importorskip("ray", reason="hvx.distributed needs Ray: pip install 'hvx[ray]'")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for this module (its GCS address is yielded, for drivers in
    other processes); its processes are ended by PID afterwards."""
    auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # drivers in subprocesses join without a token
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield ray.get_runtime_context().gcs_address
    finally:
        pids = descendants(os.getpid())
        ray.shutdown()
        kill_pids([p for p in pids if p in set(descendants(os.getpid()))])
        if auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth


def test_local_ray_equals_single_process(cohort, local_ray, tmp_path):
    from hvx.distributed import format_table

    out = tmp_path / "ray"
    res = run_cohort(cohort["slides"], out, 240)
    assert_same_outputs(cohort, out)
    rows = {r["slide"].rsplit("/", 1)[-1]: r for r in res["slides"]}
    for s in cohort["slides"]:
        _, single = cohort["single"][s.stem]
        assert rows[s.name]["nuclei"] == single["nuclei"]
        assert rows[s.name]["regions"] > 1  # several regions per slide, seams between them
        assert len(list((out / s.stem / "regions").glob("r*.npz"))) == rows[s.name]["regions"]
    assert res["timing"]["retried_chunks"] == 0
    roles = {w["role"] for w in res["workers"]}
    assert roles == {"engine", "postprocess", "driver"}
    assert all(w["peak_rss_mb"] > 0 for w in res["workers"])
    assert "peak memory per worker" in format_table(res)
    assert json.loads((out / "cohort.json").read_text())["slides"] == res["slides"]

    # The same command again: every slide is finished, nothing is recomputed.
    again = run_cohort(cohort["slides"], out, 120)
    assert again["timing"].get("chunks", 0) == 0
    assert [r["nuclei"] for r in again["slides"]] == [r["nuclei"] for r in res["slides"]]
    assert_same_outputs(cohort, out)

    # A parameter that changes results, same folder: refused before any work.
    from hvx.tiling import RunMismatchError, TilingConfig

    with pytest.raises(RunMismatchError, match="different run"):
        run_cohort(
            cohort["slides"], out, 120, tiling=TilingConfig(tile=256, overlap=32, batch_size=4)
        )
    assert_same_outputs(cohort, out)


HERE = Path(__file__).resolve().parent
DRIVER = """
import json, sys
sys.path.insert(0, {here!r})
from conftest import REGION_PX, config
from hvx.distributed import run_slides
res = run_slides({slides!r}, {out!r}, address={address!r}, config=config(),
                 region_px=REGION_PX, labels=True, workers=1, progress=False)
print(json.dumps(res["timing"]))
"""


def test_a_driver_killed_mid_run_resumes(cohort, local_ray, tmp_path):
    """A driver process on the cluster is SIGKILLed after its first committed region (its
    actors die with it); the same command again keeps the committed regions, computes
    the rest only, and ends with the single-process outputs."""

    out = tmp_path / "ray"
    script = tmp_path / "driver.py"
    slides = [str(s) for s in cohort["slides"]]
    script.write_text(DRIVER.format(here=str(HERE), slides=slides, out=str(out), address=local_ray))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        end = time.monotonic() + 180
        while time.monotonic() < end and proc.poll() is None:
            if list(out.glob("*/regions/r*.npz")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert list(out.glob("*/regions/r*.npz")), "no region committed within 180 s"
        tree = [*descendants(proc.pid), proc.pid]
        os.kill(proc.pid, signal.SIGKILL)
        kill_pids(tree)
        proc.wait(timeout=30)
    finally:
        kill_pids([*descendants(proc.pid), proc.pid])
        proc.stderr.close()
    committed = {p: p.stat().st_mtime_ns for p in out.glob("*/regions/r*.npz")}
    assert not all((out / s.stem / "summary.json").exists() for s in cohort["slides"])

    res = run_cohort(cohort["slides"], out, 240)
    assert {p: p.stat().st_mtime_ns for p in committed} == committed  # kept, not recomputed
    n_regions = sum(r["regions"] for r in res["slides"])
    assert res["timing"].get("regions", 0) == n_regions - len(committed)
    assert_same_outputs(cohort, out)


def test_hvx_slide_ray_command(cohort, local_ray, tmp_path, capsys):
    """``hvx slide SLIDE --out DIR --ray --assemble cluster`` (default model, joining the
    running Ray, the slide stitched in a Ray task): the single-process outputs, and the
    per-slide table."""
    from hvx.cli import main

    beta = cohort["slides"][1]
    out = tmp_path / "cli"
    argv = [
        "slide",
        str(beta),
        "--out",
        str(out),
        "--ray",
        "--workers",
        "1",
        "--labels",
        "--tile",
        "256",
        "--tile-batch",
        "4",
        "--region",
        str(REGION_PX),
        "--no-progress",
        "--assemble",
        "cluster",
    ]
    assert bounded(lambda: main(argv), 180) == 0
    ref, single = cohort["single"][beta.stem]
    for name in ("nuclei.geojson", "nuclei.csv", "nuclei_labels.tif"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    printed = capsys.readouterr().out
    assert "beta.png" in printed and str(single["nuclei"]) in printed and "mm2/s" in printed


def test_hvx_slide_ray_stain_norm_equals_single_process(cohort, local_ray, tmp_path):
    """``--stain-norm`` on Ray: the driver fits each slide once, the workers map every
    region with that fit: the outputs of ``hvx slide --stain-norm`` on one machine."""
    from hvx.cli import main

    beta = cohort["slides"][1]
    common = [str(beta), "--labels", "--tile", "256", "--tile-batch", "4", "--no-progress"]
    common += ["--stain-norm", "macenko"]
    one, cluster = tmp_path / "one", tmp_path / "ray"
    assert main(["slide", *common, "--out", str(one)]) == 0
    argv = ["slide", *common, "--out", str(cluster), "--ray", "--workers", "1"]
    assert bounded(lambda: main([*argv, "--region", str(REGION_PX)]), 180) == 0
    ref, _ = cohort["single"][beta.stem]
    for name in ("nuclei.geojson", "nuclei.csv", "nuclei_labels.tif"):
        assert (cluster / name).read_bytes() == (one / name).read_bytes(), name
    assert (one / "nuclei.csv").read_bytes() != (ref / "nuclei.csv").read_bytes()
    stain = json.loads((cluster / "run.json").read_text())
    assert json.dumps(stain).count('"macenko"') == 1
