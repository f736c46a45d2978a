import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from synth import OracleEngine, mosaic, random_blobs, relabel

from hvx.io.slides import ArrayReader
from hvx.results import NucleusTable
from hvx.tiling import RunMismatchError, TilingConfig, infer_image, infer_slide, plan_tiles

HERE = Path(__file__).resolve().parent


def _scene(h=700, w=820, seed=0):
    inst, cls = random_blobs(h, w, h * w // 500, 12, seed=seed)
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)  # unique tiles for the oracle
    return image, inst, cls


def _oracle(image, inst, cls, cfg):
    eng = OracleEngine(image, inst, cls, cfg.tile, pad_value=cfg.pad_value)
    for t in plan_tiles(*inst.shape, cfg.tile, cfg.overlap):
        eng.locate(t.y0, t.x0)
    return eng


def test_infer_image_equals_labels_and_table_is_consistent():
    image, inst, cls = _scene()
    cfg = TilingConfig(tile=128, overlap=32, batch_size=5, tissue=False)
    res = infer_image(_oracle(image, inst, cls, cfg), image, config=cfg)
    assert np.array_equal(relabel(res.inst), relabel(inst))
    nu = res.nuclei
    assert np.array_equal(nu.id, np.arange(1, len(nu) + 1))
    assert len(nu) == len(np.unique(inst)) - 1
    assert isinstance(nu, NucleusTable)  # one table type: the tiled one extends it
    assert len(nu.cut) == len(nu.tile) == len(nu) and nu.masks == []
    areas = np.bincount(res.inst.ravel(), minlength=len(nu) + 1)[1:]
    assert np.array_equal(areas, nu.area)
    for k in range(len(nu)):  # type map holds each nucleus' class
        r0, c0, r1, c1 = nu.bbox[k]
        m = res.inst[r0:r1, c0:c1] == nu.id[k]
        assert (res.type[r0:r1, c0:c1][m] == nu.type[k]).all()


def test_infer_image_small_image_is_padded():
    image, inst, cls = _scene(90, 130, seed=4)
    cfg = TilingConfig(tile=256, overlap=64, tissue=False)
    res = infer_image(_oracle(image, inst, cls, cfg), image, config=cfg)
    assert res.inst.shape == (90, 130)
    assert np.array_equal(relabel(res.inst), relabel(inst))


class _Broken:
    class_names = ("a",)

    def infer(self, batch):
        raise RuntimeError("engine exploded")


def test_engine_errors_propagate_and_threads_stop():
    import threading

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="engine exploded"):
        infer_image(_Broken(), np.zeros((600, 600, 3), np.uint8), tile=128, overlap=32)
    assert threading.active_count() == before


def test_bad_image_is_rejected():
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) uint8 RGB image"):
        infer_image(_Broken(), np.zeros((10, 10), np.float32))


def _files(out):
    skip = (".json", ".jsonl", ".lock")  # records hold timings and pids; outputs must be equal
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.suffix not in skip}


def test_resume_after_failure_equals_uninterrupted_run(tmp_path):
    image, inst, cls = _scene(900, 700, seed=2)
    cfg = TilingConfig(tile=128, overlap=32, batch_size=4, tissue=False)
    eng = _oracle(image, inst, cls, cfg)
    full = infer_slide(
        eng, ArrayReader(image), tmp_path / "a", config=cfg, formats=(), labels=True, progress=False
    )

    class StopError(Exception):
        pass

    def fail(region):
        if region == 3:
            raise StopError

    with pytest.raises(StopError):
        infer_slide(
            eng,
            ArrayReader(image),
            tmp_path / "b",
            config=cfg,
            formats=(),
            labels=True,
            progress=False,
            on_region=fail,
        )
    assert not (tmp_path / "b" / "nuclei_labels.tif").exists()  # nothing half-finished
    recs = [json.loads(x) for x in (tmp_path / "b" / "progress.jsonl").read_text().split("\n") if x]
    assert [r["region"] for r in recs] == [0, 1, 2, 3]
    calls = eng.calls
    resumed = infer_slide(
        eng, ArrayReader(image), tmp_path / "b", config=cfg, formats=(), labels=True, progress=False
    )
    assert resumed["resumed"] and resumed["nuclei"] == full["nuclei"]
    assert eng.calls - calls < full["tiles_run"] / cfg.batch_size  # only the rest re-ran
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    import tifffile

    labels = tifffile.imread(tmp_path / "a" / "nuclei_labels.tif")
    assert np.array_equal(relabel(labels), relabel(inst))
    # finished: a third call does nothing
    assert (
        infer_slide(
            eng,
            ArrayReader(image),
            tmp_path / "b",
            config=cfg,
            formats=(),
            labels=True,
            progress=False,
        )["nuclei"]
        == full["nuclei"]
    )


@pytest.mark.slow
def test_killed_process_resumes_to_identical_outputs(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(HERE)!r})
        import numpy as np
        from test_pipeline import _scene, _oracle
        from hvx.io.slides import ArrayReader
        from hvx.tiling import TilingConfig, infer_slide
        image, inst, cls = _scene(700, 600, seed=9)
        cfg = TilingConfig(tile=128, overlap=32, batch_size=4, tissue=False)
        kill = int(sys.argv[2])
        def on_region(r):
            if r == kill:
                os.kill(os.getpid(), signal.SIGKILL)
        infer_slide(_oracle(image, inst, cls, cfg), ArrayReader(image), sys.argv[1],
                    config=cfg, formats=(), labels=True, progress=False, on_region=on_region)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    run = [sys.executable, "-c", script]
    assert subprocess.run([*run, str(tmp_path / "a"), "-1"], env=env).returncode == 0
    killed = subprocess.run([*run, str(tmp_path / "b"), "2"], env=env)
    assert killed.returncode == -9
    assert subprocess.run([*run, str(tmp_path / "b"), "-1"], env=env).returncode == 0
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_output_folder_of_another_run_is_refused(tmp_path):
    image, inst, cls = _scene(300, 300, seed=5)
    cfg = TilingConfig(tile=128, overlap=32, tissue=False)
    eng = _oracle(image, inst, cls, cfg)
    infer_slide(
        eng, ArrayReader(image), tmp_path, config=cfg, formats=(), labels=True, progress=False
    )
    before = _files(tmp_path)
    other = TilingConfig(tile=128, overlap=32, batch_size=3, tissue=False)
    with pytest.raises(RunMismatchError, match=r"different run .*differs in \['params'\]"):
        infer_slide(
            eng, ArrayReader(image), tmp_path, config=other, formats=(), labels=True, progress=False
        )
    image2 = image.copy()
    image2[0, 0] ^= 1
    with pytest.raises(RunMismatchError, match=r"differs in \['input'\]"):
        infer_slide(
            eng, ArrayReader(image2), tmp_path, config=cfg, formats=(), labels=True, progress=False
        )
    assert _files(tmp_path) == before  # nothing overwritten
    s = infer_slide(
        eng,
        ArrayReader(image),
        tmp_path,
        config=other,
        formats=(),
        labels=True,
        progress=False,
        overwrite=True,
    )
    assert s["nuclei"] == len(np.unique(inst)) - 1


def test_stray_outputs_without_a_run_record_are_refused(tmp_path):
    (tmp_path / "nuclei_labels.tif").write_bytes(b"someone else's")
    image, inst, cls = _scene(200, 200, seed=6)
    cfg = TilingConfig(tile=128, overlap=32, tissue=False)
    with pytest.raises(RunMismatchError, match="without hvx outputs of an unknown run"):
        infer_slide(
            _oracle(image, inst, cls, cfg),
            ArrayReader(image),
            tmp_path,
            config=cfg,
            formats=(),
            labels=True,
            progress=False,
        )
    assert (tmp_path / "nuclei_labels.tif").read_bytes() == b"someone else's"


def test_tissue_mask_skips_background_tiles(tmp_path):
    image, inst, cls = _scene(640, 640, seed=7)
    image[:, 320:] = 245  # right half: bright, unsaturated glass
    inst[:, 300:] = 0
    cfg = TilingConfig(tile=128, overlap=32, tissue=True)
    eng = _oracle(image, inst, cls, cfg)
    s = infer_slide(
        eng, ArrayReader(image), tmp_path, config=cfg, formats=(), labels=True, progress=False
    )
    assert 0 < s["tiles_background"] < s["tiles"]
    import tifffile

    labels = tifffile.imread(tmp_path / "nuclei_labels.tif")
    assert np.array_equal(relabel(labels), relabel(inst))


def test_geojson_and_csv_are_valid_and_match_the_labels(tmp_path, consep_dir):
    pytest.importorskip("hvx.io", reason="hvx.io (engine branch) not merged yet")
    image, inst, cls = mosaic(consep_dir, 3, 3, seed=3)
    cfg = TilingConfig(tile=256, overlap=128, tissue=False)
    eng = _oracle(image, inst, cls, cfg)
    s = infer_slide(eng, ArrayReader(image), tmp_path, config=cfg, labels=True, progress=False)
    doc = json.loads((tmp_path / "nuclei.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == s["nuclei"]
    ids = [f["properties"]["measurements"]["hvx id"] for f in doc["features"]]
    assert ids == list(range(1, s["nuclei"] + 1))
    names = {f["properties"]["classification"]["name"] for f in doc["features"]}
    assert names <= set(eng.class_names)
    rows = (tmp_path / "nuclei.csv").read_text().strip().split("\n")
    assert rows[0].split(",")[-1] == "cut" and len(rows) == s["nuclei"] + 1
    assert sum(s["per_class"].values()) == s["nuclei"] == len(np.unique(inst)) - 1
