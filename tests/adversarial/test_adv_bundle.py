"""Finding 10 (issue 23): bundle values are range-checked in one place.

np_threshold 5.0 silently gave 0 nuclei; opening_ksize 100001 hung; 1e30 gave a
TypeError; deeply nested JSON a RecursionError; ``preprocess.tile_size: 1e9``
allocated 22.5 GB.
"""

import json

import pytest

from hvx.bundle import load_bundle


def _edit(bundle, tmp_path, edit):
    import shutil

    dst = tmp_path / "edited"
    shutil.copytree(bundle, dst)
    m = json.loads((dst / "model.json").read_text())
    edit(m)
    (dst / "model.json").write_text(json.dumps(m))
    return dst


@pytest.mark.parametrize(
    ("section", "key", "value", "match"),
    [
        ("postprocess", "np_threshold", 5.0, r"np_threshold.*\[0, 1\]"),
        ("postprocess", "marker_threshold", -0.5, r"marker_threshold.*\[0, 1\]"),
        ("postprocess", "opening_ksize", 100001, r"opening_ksize.*\[1, 63\]"),
        ("postprocess", "min_object_size", 1e30, r"min_object_size"),
        ("preprocess", "tile_size", 1_000_000_000, r"tile_size.*\[1, 1024\]"),
        ("preprocess", "clip_limit", 1e308, r"clip_limit"),
    ],
)
def test_out_of_range_values_are_refused(bundle, tmp_path, section, key, value, match):
    path = _edit(bundle, tmp_path, lambda m: m[section].__setitem__(key, value))
    with pytest.raises(ValueError, match=match):
        load_bundle(path)


def test_non_finite_numbers_anywhere_are_refused(bundle, tmp_path):
    path = _edit(bundle, tmp_path, lambda m: m["metrics"].__setitem__("pq", float("nan")))
    with pytest.raises(ValueError, match="finite"):
        load_bundle(path)


def test_deeply_nested_json_is_a_value_error(bundle, tmp_path):
    import shutil

    dst = tmp_path / "deep"
    shutil.copytree(bundle, dst)
    text = (dst / "model.json").read_text()
    deep = "[" * 100000 + "]" * 100000
    (dst / "model.json").write_text(text.replace('"metrics": {', f'"metrics": {{"x": {deep}, ', 1))
    with pytest.raises(ValueError, match="nest"):
        load_bundle(dst)


def test_huge_model_json_is_refused(bundle, tmp_path):
    path = _edit(bundle, tmp_path, lambda m: m["metrics"].__setitem__("pad", "x" * (17 << 20)))
    with pytest.raises(ValueError, match="MiB"):
        load_bundle(path)


def test_sane_values_still_load(bundle, tmp_path):
    path = _edit(bundle, tmp_path, lambda m: m["postprocess"].__setitem__("np_threshold", 0.4))
    assert load_bundle(path).postprocess.np_threshold == 0.4
