import json

import numpy as np
import pytest

from hvx.preprocess import PreprocessConfig


def test_defaults_match_opencv_and_the_contract():
    c = PreprocessConfig()
    assert (c.clip_limit, c.tile_grid, c.mode, c.mean, c.std) == (2.0, (8, 8), "6ch", None, None)
    assert c.in_chans == 6 and PreprocessConfig(mode="rgb").in_chans == 3
    assert not c.normalised


def test_round_trips_through_json():
    c = PreprocessConfig(
        clip_limit=3.5, tile_grid=(4, 2), mean=(0.1,) * 6, std=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    )
    d = json.loads(json.dumps(c.to_dict()))
    assert PreprocessConfig.from_dict(d) == c
    assert d["tile_grid"] == [4, 2]


def test_normalises_field_types():
    c = PreprocessConfig(clip_limit=2, tile_grid=[np.int64(3), 5], mean=[0] * 3, mode="rgb")
    assert c.clip_limit == 2.0 and isinstance(c.clip_limit, float)
    assert c.tile_grid == (3, 5) and type(c.tile_grid[0]) is int
    assert c.mean == (0.0, 0.0, 0.0)
    hash(c)  # frozen and hashable


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"clip_limit": 0.0}, ValueError, r"expected clip_limit > 0"),
        ({"clip_limit": -1.0}, ValueError, r"expected clip_limit > 0"),
        ({"clip_limit": float("nan")}, ValueError, r"expected clip_limit > 0"),
        ({"clip_limit": "2"}, TypeError, r"expected clip_limit as a float"),
        ({"clip_limit": True}, TypeError, r"expected clip_limit as a float"),
        ({"tile_grid": (0, 8)}, ValueError, r"expected tile_grid entries >= 1, got \(0, 8\)"),
        ({"tile_grid": (8,)}, TypeError, r"expected tile_grid as two ints"),
        ({"tile_grid": (8.0, 8)}, TypeError, r"expected tile_grid as two ints"),
        ({"tile_grid": "88"}, TypeError, r"expected tile_grid as two ints"),
        ({"mode": "hsv"}, ValueError, r"expected mode in \('6ch', 'rgb'\), got 'hsv'"),
        ({"mean": (0.5,) * 3}, ValueError, r"expected mean of length 6"),
        ({"mode": "rgb", "std": (1.0,) * 6}, ValueError, r"expected std of length 3"),
        ({"std": (1.0,) * 5 + (0.0,)}, ValueError, r"expected std > 0"),
        ({"mean": (float("inf"),) * 6}, ValueError, r"expected finite floats in mean"),
        ({"mean": 0.5}, TypeError, r"expected mean as a sequence of 6 floats"),
    ],
)
def test_rejects_bad_fields(kwargs, err, match):
    with pytest.raises(err, match=match):
        PreprocessConfig(**kwargs)


def test_from_dict_rejects_unknown_and_missing_keys():
    d = PreprocessConfig().to_dict()
    with pytest.raises(ValueError, match=r"unknown key 'gamma'; expected one of clip_limit"):
        PreprocessConfig.from_dict({**d, "gamma": 1.0})
    del d["std"]
    with pytest.raises(ValueError, match=r"missing key 'std'; .* documented default: none"):
        PreprocessConfig.from_dict(d)
    with pytest.raises(ValueError, match="expected a mapping at the top level, got list"):
        PreprocessConfig.from_dict([])
    with pytest.raises(ValueError, match="expected clip_limit > 0"):
        PreprocessConfig.from_dict({**PreprocessConfig().to_dict(), "clip_limit": 0})
