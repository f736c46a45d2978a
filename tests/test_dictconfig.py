"""The one dict rule of every config (hvx._dictconfig), table-driven over all of them."""

import dataclasses
import json

import pytest

from hvx import _dictconfig
from hvx.backends.plan import PlanSettings, PlanTarget
from hvx.postprocess import PostprocessConfig
from hvx.preprocess import PreprocessConfig
from hvx.training.augment import AugmentConfig
from hvx.training.config import OptimConfig, TrainConfig

# (config instance (not the defaults), a key with no documented default or None,
#  a key with a documented default or None)
CONFIGS = [
    (PreprocessConfig(mode="rgb", tile_size=32, mean=(0.1, 0.2, 0.3)), "mode", None),
    (PostprocessConfig(marker_threshold=0.45, conic=True), "sobel_ksize", None),
    (PlanSettings((1, 32, 32), (2, 64, 64), (4, 128, 128), ("fp16", "tf32")), "max_shape", None),
    (PlanTarget("10.7.0", "NVIDIA H100", (9, 0)), "gpu_name", None),
    (AugmentConfig(hed=True, rotate=(-90, 90), blur_ksizes=(1, 3)), None, "rotate"),
    (
        TrainConfig(epochs=3, optim=OptimConfig(lr=1e-3), preprocess=PreprocessConfig(mode="rgb")),
        None,
        "epochs",
    ),
]
IDS = [type(c).__name__ for c, _, _ in CONFIGS]


@pytest.mark.parametrize(("cfg", "required", "defaulted"), CONFIGS, ids=IDS)
def test_round_trip_through_json(cfg, required, defaulted):
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d == _dictconfig.to_dict(cfg)
    assert type(cfg).from_dict(d) == cfg


@pytest.mark.parametrize(("cfg", "required", "defaulted"), CONFIGS, ids=IDS)
def test_unknown_key_fails_naming_it_and_the_allowed_ones(cfg, required, defaulted):
    d = {**cfg.to_dict(), "bogus": 1}
    first = dataclasses.fields(cfg)[0].name
    with pytest.raises(ValueError, match=rf"unknown key 'bogus'; expected one of {first}, "):
        type(cfg).from_dict(d)


@pytest.mark.parametrize(("cfg", "required", "defaulted"), CONFIGS, ids=IDS)
def test_missing_key_fails_unless_its_default_is_documented(cfg, required, defaulted):
    cls = type(cfg)
    if required is not None:
        d = cfg.to_dict()
        del d[required]
        with pytest.raises(ValueError, match=rf"missing key '{required}'"):
            cls.from_dict(d)
        assert required not in _dictconfig._defaulted(cls)
    if defaulted is not None:
        d = cfg.to_dict()
        del d[defaulted]
        assert defaulted in _dictconfig._defaulted(cls)
        want = dataclasses.replace(cfg, **{defaulted: getattr(cls(), defaulted)})
        assert cls.from_dict(d) == want != cfg


def test_partial_nested_section_keeps_the_enclosing_default():
    got = TrainConfig.from_dict({"preprocess": {"mode": "rgb"}, "optim": None})
    assert got == TrainConfig(preprocess=PreprocessConfig(mode="rgb"))
    with pytest.raises(ValueError, match=r"src: unknown key 'optim.lrr'; expected one of lr"):
        TrainConfig.from_dict({"optim": {"lrr": 1}}, source="src")


@dataclasses.dataclass(frozen=True)
class _Inner:
    a: int = 1
    b: tuple[float, ...] = (0.5,)


@dataclasses.dataclass(frozen=True)
class _Strict:
    inner: _Inner = _Inner()
    n: int = 0


@dataclasses.dataclass(frozen=True)
class _Lenient:
    inner: _Inner = _Inner(a=7)
    n: int = 0

    DEFAULTED_KEYS = frozenset({"inner"})


def test_nested_rule_and_coercion():
    got = _dictconfig.from_dict(_Strict, {"inner": {"a": 2, "b": [1, 2]}, "n": 3})
    assert got == _Strict(_Inner(2, (1.0, 2.0)), 3) and isinstance(got.inner.b, tuple)
    with pytest.raises(ValueError, match=r"missing key 'inner.b'"):
        _dictconfig.from_dict(_Strict, {"inner": {"a": 2}, "n": 3})
    with pytest.raises(ValueError, match=r"missing key 'n'; _Lenient fields with a doc"):
        _dictconfig.from_dict(_Lenient, {"inner": {"a": 2}})
    # inner may be left out, so its default instance (a=7) fills what it leaves out
    assert _dictconfig.from_dict(_Lenient, {"inner": {"b": [3]}, "n": 1}) == _Lenient(
        _Inner(7, (3.0,)), 1
    )
    assert _dictconfig.from_dict(_Lenient, {"n": 1}) == _Lenient(n=1)


@pytest.mark.parametrize(
    ("d", "match"),
    [
        ({"inner": {"a": True, "b": []}, "n": 0}, r"expected inner.a of type int, got True"),
        ({"inner": {"a": 1.5, "b": []}, "n": 0}, r"expected inner.a of type int, got 1.5"),
        ({"inner": {"a": 1, "b": ["x"]}, "n": 0}, r"expected inner.b of type float"),
        ({"inner": 3, "n": 0}, r"expected a mapping for inner, got int 3"),
        ([1], r"expected a mapping at the top level, got list"),
    ],
)
def test_type_errors_name_the_field(d, match):
    with pytest.raises(ValueError, match=match):
        _dictconfig.from_dict(_Strict, d)
