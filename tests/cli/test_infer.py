"""``hvx infer`` on a tiny random-weight bundle: outputs, skip/overwrite, bad files."""

import json

import cv2
import numpy as np
import pytest

from hvx.cli import main

FORMATS = "npy,conic,geojson,csv,overlay"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.tif"):
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "c.jpg"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return folder


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HVX_CACHE_DIR", str(tmp_path / "cache"))


def _run(*args):
    return main(["infer", *map(str, args), "--no-progress", "--backend", "torch"])


def test_writes_every_format(bundle, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(images, "--out", out, "--model", bundle, "--format", FORMATS) == 0
    assert "3 processed, 0 skipped" in capsys.readouterr().out
    for stem, shape in (("a", (48, 40)), ("b", (48, 40)), ("c", (32, 32))):
        inst = np.load(out / f"{stem}_inst.npy", allow_pickle=False)
        assert inst.shape == shape and inst.dtype == np.int32
        assert np.load(out / f"{stem}_conic.npy").shape == (*shape, 2)
        doc = json.loads((out / f"{stem}.geojson").read_text())
        assert doc["type"] == "FeatureCollection"
        n = len(doc["features"])
        for f in doc["features"]:
            ring = f["geometry"]["coordinates"][0]
            assert ring[0] == ring[-1] and len(ring) >= 4
            name = f["properties"].get("classification", {}).get("name")
            assert name in (None, "epithelial", "lymphocyte")
        assert (out / f"{stem}.csv").read_text().count("\n") == n + 1
        assert cv2.imread(str(out / f"{stem}_overlay.png")).shape == (*shape, 3)
        assert int(inst.max()) == n
    assert not list(out.glob(".*tmp"))


def test_rerun_skips_finished_unless_overwrite(bundle, images, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert _run(images, "--out", out, "--model", bundle, "--format", "csv") == 0
    capsys.readouterr()
    stamp = (out / "a.csv").stat().st_mtime_ns
    (out / "c.csv").unlink()  # unfinished image
    assert _run(images, "--out", out, "--model", bundle, "--format", "csv") == 0
    assert "1 processed, 2 skipped" in capsys.readouterr().out
    assert (out / "a.csv").stat().st_mtime_ns == stamp
    assert _run(images, "--out", out, "--model", bundle, "--format", "csv", "--overwrite") == 0
    assert "3 processed, 0 skipped" in capsys.readouterr().out

    def no_load(*args, **kwargs):
        raise AssertionError("nothing to do: the model must not be loaded")

    from hvx.engine import Engine

    monkeypatch.setattr(Engine, "load", no_load)
    assert _run(images, "--out", out, "--model", bundle, "--format", "csv") == 0
    assert "0 processed, 3 skipped" in capsys.readouterr().out


def test_one_bad_file_is_reported_and_the_others_finish(bundle, images, tmp_path, capsys, caplog):
    (images / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert _run(images, "--out", out, "--model", bundle, "--format", "npy") == 1
    assert "3 processed, 0 skipped (already done), 1 failed" in capsys.readouterr().out
    assert "broken.png" in caplog.text and "cannot decode" in caplog.text
    assert sorted(p.name for p in out.glob("*_inst.npy")) == [
        "a_inst.npy",
        "b_inst.npy",
        "c_inst.npy",
    ]


def test_argument_errors(bundle, images, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["infer", str(images), "--out", str(tmp_path), "--format", "parquet"])
    assert exc.value.code == 2
    assert "expected a comma-separated subset" in capsys.readouterr().err
    assert _run("--out", tmp_path / "o") == 2  # no inputs and no --samples
    with pytest.raises(SystemExit) as exc:  # out of range: refused by the parser
        _run(images, "--out", tmp_path / "o", "--model", bundle, "--mpp", "0")
    assert exc.value.code == 2
    assert _run(tmp_path / "absent.png", "--out", tmp_path / "o", "--model", bundle) == 2


def test_samples_with_the_default_model(tmp_path, capsys):
    out = tmp_path / "demo"
    assert _run("--samples", "--out", out, "--format", "overlay,geojson,csv") == 0
    assert "4 processed, 0 skipped" in capsys.readouterr().out
    assert len(list(out.glob("*_overlay.png"))) == 4
    assert len(list(out.glob("*.geojson"))) == 4
    assert len(list(out.glob("*.csv"))) == 4
