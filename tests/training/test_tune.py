"""hvx-train --tune-postprocess: grid search on training tiles only, atomic write-back."""

import json
import shutil

import pytest

from hvx.assets import DEFAULT_MODEL_DIR
from hvx.bundle import load_bundle
from hvx.training import cli
from hvx.training.tune import tune_postprocess, write_postprocess

GRID = {"marker_threshold": (0.3, 0.4), "sobel_ksize": (11, 21)}


@pytest.fixture
def bundle(tmp_path):
    return shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "b")


def test_picks_the_best_grid_point_on_training_tiles_only(bundle, consep_dir):
    cur = load_bundle(bundle).postprocess
    grid = {"marker_threshold": (cur.marker_threshold, 0.3), "sobel_ksize": (11, cur.sobel_ksize)}
    rep = tune_postprocess(bundle, consep_dir, grid=grid, max_tiles=4, backend="torch")
    held_out = set(load_bundle(bundle).provenance["data"]["val_sources"])
    assert rep["tiles"] == 4 and not held_out & set(rep["sources"])
    assert len(rep["results"]) == 4
    top = max([rep["current"]["pq"], *(r["pq"] for r in rep["results"])])
    assert rep["best"]["pq"] == top
    # the bundle's own config is one grid point here: same score
    own = {"marker_threshold": cur.marker_threshold, "sobel_ksize": cur.sobel_ksize}
    same = [r for r in rep["results"] if r["change"] == own]
    assert same[0]["pq"] == rep["current"]["pq"]


def test_write_back_is_validated_and_reloads(bundle):
    cfg = load_bundle(bundle).postprocess.to_dict()
    write_postprocess(bundle, {**cfg, "marker_threshold": 0.55})
    assert load_bundle(bundle).postprocess.marker_threshold == 0.55
    before = (bundle / "model.json").read_text()
    with pytest.raises(ValueError, match="sobel_ksize"):
        write_postprocess(bundle, {**cfg, "sobel_ksize": 4})
    assert (bundle / "model.json").read_text() == before  # nothing written


def test_refuses_bundles_without_a_recorded_split_and_bad_grids(bundle, consep_dir):
    m = json.loads((bundle / "model.json").read_text())
    with pytest.raises(ValueError, match="expected a grid of non-empty value lists"):
        tune_postprocess(bundle, consep_dir, grid={"no_such_field": (1,)})
    m["provenance"]["data"].pop("val_sources")
    (bundle / "model.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=r"provenance\.data\.val_sources"):
        tune_postprocess(bundle, consep_dir, grid=GRID, max_tiles=2)


def test_cli_reports_and_writes(bundle, consep_dir, tmp_path, capsys):
    out = tmp_path / "tune.json"
    argv = ["--tune-postprocess", str(bundle), "--data", str(consep_dir), "--max-tiles", "2"]
    assert cli.main([*argv, "--backend", "torch", "--json", str(out)]) == 0
    assert "training tiles from" in capsys.readouterr().out
    assert json.loads(out.read_text())["tiles"] == 2
    assert cli.main(["--tune-postprocess", str(tmp_path / "nope"), "--data", str(consep_dir)]) == 2


MONUSEG = DEFAULT_MODEL_DIR.parents[2].parent / "shared" / "data" / "monuseg"


@pytest.mark.skipif(not MONUSEG.is_dir(), reason=f"MoNuSeg not found at {MONUSEG}")
def test_several_datasets_mean_of_binary_pq(bundle, consep_dir):
    m = json.loads((bundle / "model.json").read_text())
    held = ["lung_TCGA-50-5931-01Z-00-DX1"]
    m["provenance"]["data"]["val_sources"] += held
    (bundle / "model.json").write_text(json.dumps(m))
    grid = {"marker_threshold": (0.4,)}
    rep = tune_postprocess(bundle, [consep_dir, MONUSEG], grid=grid, max_tiles=2, backend="torch")
    row = rep["results"][0]
    assert set(row["datasets"]) == {"consep", "monuseg"}
    assert "mpq_plus" not in row["datasets"]["monuseg"]
    mean = (row["datasets"]["consep"]["pq"] + row["datasets"]["monuseg"]["pq"]) / 2
    assert row["pq"] == pytest.approx(mean)
    assert rep["tiles"] == 4 and not set(held) & set(rep["sources"])
    single = tune_postprocess(bundle, consep_dir, grid=grid, max_tiles=2, backend="torch")
    assert single["results"][0]["pq"] == row["datasets"]["consep"]["pq"]
