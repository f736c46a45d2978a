import json

import numpy as np
import pytest

from hvx.io.streams import GeoJSONStream, MaskStream, PartFile, write_label_tiff
from hvx.results import Nuclei

tifffile = pytest.importorskip("tifffile")


def _nuclei(boxes, start=1):
    masks = [np.ones((b[2] - b[0], b[3] - b[1]), bool) for b in boxes]
    k = len(boxes)
    return Nuclei(
        id=np.arange(start, start + k, dtype=np.int32),
        type=np.ones(k, np.int32),
        type_prob=np.ones(k, np.float32),
        centroid=np.array([((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes]).reshape(-1, 2),
        bbox=np.array(boxes, np.int32).reshape(-1, 4),
        area=np.array([m.sum() for m in masks], np.int64),
        contours=[
            np.array([[b[1], b[0]], [b[3] - 1, b[0]], [b[3] - 1, b[2] - 1]], np.int32)
            for b in boxes
        ],
        masks=masks,
        cut=np.zeros(k, bool),
        tile=np.zeros(k, np.int32),
    )


def test_label_tiff_paints_in_order_with_low_water_marks(tmp_path):
    h, w = 300, 270  # not multiples of the TIFF tile
    ms = MaskStream(tmp_path / "m.bin")
    ms.add(_nuclei([(0, 0, 10, 10), (5, 5, 20, 20)]), low_water=0)  # 2 overlaps 1: first wins
    ms.add(_nuclei([(100, 200, 140, 270)], start=3), low_water=100)
    ms.add(_nuclei([(290, 0, 300, 5)], start=4), low_water=300)
    path = ms.finish()
    out = write_label_tiff(path, tmp_path / "l.tif", h, w, chunk=64)
    lab = tifffile.imread(out)
    ref = np.zeros((h, w), np.int32)
    ref[5:20, 5:20] = 2
    ref[0:10, 0:10] = 1
    ref[100:140, 200:270] = 3
    ref[290:300, 0:5] = 4
    assert lab.dtype == np.int32 and np.array_equal(lab, ref)
    with tifffile.TiffFile(out) as tif:
        assert tif.pages.first.is_tiled


def test_label_tiff_rejects_nuclei_above_the_low_water_mark(tmp_path):
    ms = MaskStream(tmp_path / "m.bin")
    ms.add(_nuclei([]), low_water=128)
    ms.add(_nuclei([(10, 0, 20, 5)]), low_water=128)
    with pytest.raises(ValueError, match="below the low-water mark"):
        write_label_tiff(ms.finish(), tmp_path / "l.tif", 200, 200, chunk=64)
    with pytest.raises(ValueError, match="multiple of 16"):
        write_label_tiff(tmp_path / "m.bin", tmp_path / "l.tif", 200, 200, chunk=50)


def test_part_file_resumes_from_a_checkpoint(tmp_path):
    f = PartFile(tmp_path / "x.txt", b"head\n")
    f.write(b"one\n")
    size = f.checkpoint()
    f.write(b"torn tail that a crash left behind")
    f.close()
    g = PartFile(tmp_path / "x.txt", b"head\n", resume_size=size)
    g.write(b"two\n")
    assert g.finish(b"end\n").read_bytes() == b"head\none\ntwo\nend\n"
    assert not (tmp_path / "x.txt.part").exists()
    with pytest.raises(ValueError, match="to resume"):
        PartFile(tmp_path / "y.txt", resume_size=10)


def test_geojson_stream_is_valid_json_when_finished(tmp_path):
    g = GeoJSONStream(tmp_path / "n.geojson", ("a",), ((1, 2, 3),))
    g.add(_nuclei([(0, 0, 4, 4), (10, 10, 20, 12)]))
    g.add(_nuclei([]))
    g.add(_nuclei([(30, 30, 33, 35)], start=3))
    assert not (tmp_path / "n.geojson").exists()  # only the .part while running
    doc = json.loads(g.finish().read_text())
    assert [f["properties"]["measurements"]["hvx id"] for f in doc["features"]] == [1, 2, 3]
    assert doc["features"][0]["properties"]["classification"] == {"name": "a", "color": [1, 2, 3]}
    empty = GeoJSONStream(tmp_path / "e.geojson", ("a",))
    assert json.loads(empty.finish().read_text()) == {"type": "FeatureCollection", "features": []}
