"""A local Ray (``ray.init(num_cpus=2)``) runs a cohort: outputs equal the single-process
run byte for byte; a rerun does nothing; changed parameters on reuse are refused."""

from __future__ import annotations

import json

import pytest
from conftest import REGION_PX, assert_same_outputs, bounded, config, descendants, kill_pids

ray = pytest.importorskip("ray", reason="hvx.distributed needs Ray: pip install 'hvx[ray]'")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for this module; its processes are ended by PID afterwards."""
    import os

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    pids = descendants(os.getpid())
    ray.shutdown()
    kill_pids([p for p in pids if p in set(descendants(os.getpid()))])


def test_local_ray_equals_single_process(cohort, local_ray, tmp_path):
    from hvx.distributed import format_table, run_slides

    out = tmp_path / "ray"
    res = bounded(
        lambda: run_slides(
            cohort["slides"],
            out,
            config=config(),
            region_px=REGION_PX,
            labels=True,
            workers=1,
            progress=False,
        ),
        240,
    )
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
    again = bounded(
        lambda: run_slides(
            cohort["slides"],
            out,
            config=config(),
            region_px=REGION_PX,
            labels=True,
            workers=1,
            progress=False,
        ),
        120,
    )
    assert again["timing"].get("chunks", 0) == 0
    assert [r["nuclei"] for r in again["slides"]] == [r["nuclei"] for r in res["slides"]]
    assert_same_outputs(cohort, out)

    # A parameter that changes results, same folder: refused before any work.
    from hvx.tiling import RunMismatchError, TilingConfig

    with pytest.raises(RunMismatchError, match="different run"):
        bounded(
            lambda: run_slides(
                cohort["slides"],
                out,
                config=TilingConfig(batch_size=4, overlap=32),
                region_px=REGION_PX,
                labels=True,
                workers=1,
                progress=False,
            ),
            120,
        )
    assert_same_outputs(cohort, out)
