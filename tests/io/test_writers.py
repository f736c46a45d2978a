import csv
import json
import os

import cv2
import numpy as np
import pytest

from hvx.io import writers as w
from hvx.results import NucleusTable

CLASSES = ("epithelial", "lymphocyte")
COLORS = ((255, 0, 0), (0, 0, 255))


def _fields():
    """Three nuclei: a square (type 1), a single pixel (type 2), an unclassified one (type 0).

    tests/cli/test_infer.py writes tables that come out of the engine.
    """
    return dict(
        id=np.array([1, 2, 3], np.int32),
        type=np.array([1, 2, 0], np.int32),
        type_prob=np.array([0.9, 0.75, 0.5], np.float32),
        centroid=np.array([[3.5, 3.5], [10.0, 12.0], [14.0, 3.0]]),
        bbox=np.array([[2, 2, 6, 6], [10, 12, 11, 13], [13, 2, 15, 5]], np.int32),
        area=np.array([16, 1, 6], np.int64),
        contours=[
            np.array([[2, 2], [2, 5], [5, 5], [5, 2]], np.int32),
            np.array([[12, 10]], np.int32),
            np.array([[2, 13], [2, 14], [4, 14], [4, 13]], np.int32),
        ],
    )


@pytest.fixture
def table():
    return NucleusTable(**_fields())


def test_geojson_is_a_qupath_feature_collection(tmp_path, table):
    path = w.write_geojson(tmp_path / "a.geojson", table, CLASSES, COLORS)
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 3
    for f in doc["features"]:
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Polygon"
        ring = f["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) >= 4  # closed, >= 3 distinct points
        assert all(len(p) == 2 and all(isinstance(v, int) for v in p) for p in ring)
        assert f["properties"]["objectType"] == "detection"
    f1, f2, f3 = doc["features"]
    assert f1["properties"]["classification"] == {"name": "epithelial", "color": [255, 0, 0]}
    assert f2["properties"]["classification"] == {"name": "lymphocyte", "color": [0, 0, 255]}
    assert "classification" not in f3["properties"]  # background type: unclassified
    # (x, y) order: the square's contour is given in (x, y) and stays so
    assert f1["geometry"]["coordinates"][0][:4] == [[2, 2], [2, 5], [5, 5], [5, 2]]
    # a one-pixel nucleus becomes its pixel box (cmin, rmin) .. (cmax, rmax)
    assert f2["geometry"]["coordinates"][0] == [[12, 10], [13, 10], [13, 11], [12, 11], [12, 10]]
    assert f1["properties"]["measurements"]["hvx id"] == 1


def test_geojson_offset_annotation_and_default_colours(table):
    feats = w.geojson_features(table, CLASSES, object_type="annotation", offset=(100, 200))
    assert feats[0]["properties"]["objectType"] == "annotation"
    assert feats[0]["geometry"]["coordinates"][0][0] == [102, 202]
    assert len(feats[0]["properties"]["classification"]["color"]) == 3
    with pytest.raises(ValueError, match="expected object_type 'detection' or 'annotation'"):
        w.geojson_features(table, CLASSES, object_type="cell")


def test_csv_columns_and_values(tmp_path, table):
    path = w.write_csv(tmp_path / "a.csv", table, CLASSES)
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == w.CSV_COLUMNS
    assert w.CSV_COLUMNS[:4] == ("id", "class_id", "class", "probability")
    assert [r["class"] for r in rows] == ["epithelial", "lymphocyte", ""]
    assert rows[1]["centroid_y"] == "10.000" and rows[1]["centroid_x"] == "12.000"
    assert [int(rows[0][k]) for k in ("bbox_rmin", "bbox_cmin", "bbox_rmax", "bbox_cmax")] == [
        2,
        2,
        6,
        6,
    ]
    assert float(rows[0]["probability"]) == pytest.approx(0.9) and rows[0]["area"] == "16"


def test_empty_table_writes_valid_files(tmp_path):
    empty = NucleusTable.empty()
    doc = json.loads(w.write_geojson(tmp_path / "e.geojson", empty, CLASSES).read_text())
    assert doc == {"type": "FeatureCollection", "features": []}
    assert w.write_csv(tmp_path / "e.csv", empty, CLASSES).read_text().count("\n") == 1


def test_npy_and_conic(tmp_path):
    inst = np.arange(12, dtype=np.int32).reshape(3, 4)
    typ = (inst % 3).astype(np.uint8)
    w.write_npy(tmp_path / "i.npy", inst)
    np.testing.assert_array_equal(np.load(tmp_path / "i.npy", allow_pickle=False), inst)
    conic = np.load(w.write_conic(tmp_path / "c.npy", inst, typ), allow_pickle=False)
    assert conic.shape == (3, 4, 2) and conic.dtype == np.int32
    np.testing.assert_array_equal(conic[..., 1], typ)
    with pytest.raises(ValueError, match=r"expected inst and type maps of one \(H, W\) shape"):
        w.write_conic(tmp_path / "c.npy", inst, typ[:2])
    with pytest.raises(TypeError, match="expected a numeric array"):
        w.write_npy(tmp_path / "o.npy", np.array([None]))


def test_overlay_draws_class_colours(tmp_path, table):
    img = np.full((16, 16, 3), 128, np.uint8)
    path = w.write_overlay(tmp_path / "o.png", img, table, COLORS)
    out = cv2.imread(str(path))[..., ::-1]
    assert out.shape == img.shape
    assert tuple(out[2, 2]) == (255, 0, 0)  # square drawn in class-1 red
    assert tuple(out[10, 12]) == (0, 0, 255)  # single pixel in class-2 blue
    assert tuple(out[13, 2]) == (255, 255, 255)  # unclassified white
    assert tuple(out[8, 8]) == (128, 128, 128)
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) uint8 RGB image"):
        w.write_overlay(tmp_path / "o.png", img[..., 0], table)


def test_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / "r.csv"
    target.write_text("old complete file\n")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        w.atomic_write(target, "new")
    assert target.read_text() == "old complete file\n"  # never half-written
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]  # temp file removed


def test_written_files_are_readable_by_others(tmp_path):
    # mkstemp's 0o600 would hide results from other users of a shared server
    for name in ("r.csv", "r.geojson"):
        assert w.atomic_write(tmp_path / name, "x").stat().st_mode & 0o777 == 0o644


def test_output_paths():
    paths = w.output_paths("out", "img1", ["npy", "geojson"])
    assert [p.name for p in paths] == ["img1_inst.npy", "img1_type.npy", "img1.geojson"]
    with pytest.raises(ValueError, match="expected formats from"):
        w.output_paths("out", "x", ["parquet"])
