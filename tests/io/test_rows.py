"""hvx.io.rows: one formatter for CSV rows and GeoJSON features, whole-image and streamed."""

import csv
import io
import json

import numpy as np

from hvx.io import rows, writers
from hvx.io.streams import CSVStream, GeoJSONStream
from hvx.results import NucleusTable
from hvx.tiling import Nuclei

NAMES = ("=HYPERLINK(1)", "lymphocyte")


def _columns():
    # Awkward values: a formula-like class name, type 0, a type past the names, a
    # 6-significant-digit probability, a single-pixel (degenerate) contour.
    return dict(
        id=np.array([7, 8, 9, 10], np.int32),
        type=np.array([1, 0, 2, 5], np.int32),
        type_prob=np.array([0.123456789, 1.0, 0.5, 1e-7], np.float32),
        centroid=np.array([[3.5, 3.25], [10.0, 12.0], [14.0625, 3.0], [0.0, 0.0]]),
        bbox=np.array([[2, 2, 6, 6], [10, 12, 11, 13], [13, 2, 15, 5], [0, 0, 1, 1]], np.int32),
        area=np.array([16, 1, 6, 1], np.int64),
        contours=[
            np.array([[2, 2], [2, 5], [5, 5], [5, 2]], np.int32),
            np.array([[12, 10]], np.int32),
            np.array([[2, 13], [2, 14], [4, 14], [4, 13]], np.int32),
            np.array([[0, 0]], np.int32),
        ],
    )


def _nuclei():
    cols = _columns()
    k = len(cols["id"])
    masks = [np.ones((b[2] - b[0], b[3] - b[1]), bool) for b in cols["bbox"]]
    return Nuclei(**cols, masks=masks, cut=np.array([0, 1, 0, 1], bool), tile=np.zeros(k, np.int32))


def test_csv_rows_format_each_column():
    text = rows.csv_header() + rows.csv_rows(NucleusTable(**_columns()), NAMES)
    got = list(csv.reader(io.StringIO(text)))
    assert got[0] == list(rows.CSV_COLUMNS)
    assert got[1] == [
        "7",
        "1",
        "'=HYPERLINK(1)",
        "0.123457",
        "3.500",
        "3.250",
        "16",
        "2",
        "2",
        "6",
        "6",
    ]
    assert got[2][1:4] == ["0", "", "1"]  # background: no class name
    assert got[3][4] == "14.062"  # 3 decimals; an exact tie rounds half to even
    assert got[4][2:4] == ["type_5", "1e-07"]  # a type id beyond the names
    assert rows.csv_rows(NucleusTable.empty(), NAMES) == ""


def test_streamed_csv_rows_are_the_whole_image_rows_plus_cut(tmp_path):
    nuc = _nuclei()
    whole = writers.write_csv(tmp_path / "whole.csv", nuc, NAMES).read_text().splitlines()
    stream = CSVStream(tmp_path / "stream.csv", NAMES)
    stream.add(nuc)
    streamed = stream.finish().read_text().splitlines()
    assert streamed[0] == whole[0] + ",cut"
    assert streamed[1:] == [w + f",{int(c)}" for w, c in zip(whole[1:], nuc.cut, strict=True)]


def test_streamed_geojson_features_are_the_whole_image_features(tmp_path):
    nuc = _nuclei()
    colors = ((1, 2, 3), (4, 5, 6))
    whole = writers.write_geojson(tmp_path / "whole.geojson", nuc, NAMES, colors)
    stream = GeoJSONStream(tmp_path / "stream.geojson", NAMES, colors)
    stream.add(nuc)
    streamed = stream.finish()
    assert json.loads(streamed.read_text()) == json.loads(whole.read_text())
    feats = json.loads(whole.read_text())["features"]
    assert feats[1]["geometry"]["coordinates"] == [
        [[12, 10], [13, 10], [13, 11], [12, 11], [12, 10]]
    ]
    assert "classification" not in feats[1]["properties"]  # type 0


def test_class_colors_fall_back_to_the_palette():
    assert rows.class_color(0, None) == (255, 255, 255)
    assert rows.class_color(1, ((9, 9, 9),)) == (9, 9, 9)
    assert rows.class_color(2, ((9, 9, 9),)) == rows.class_color(2, None)
    assert rows.class_color(9, None) == rows.class_color(1, None)  # the palette wraps at 8
