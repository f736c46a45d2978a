"""hvx.model._signature: the cached state-dict signature equals the model's, and spares timm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest
import torch

from hvx.model import _signature as sig
from hvx.model import create_model


def _model_state(variant: str, in_chans: int, num_types: int) -> dict:
    with torch.device("meta"):
        return create_model(variant, in_chans=in_chans, num_types=num_types).state_dict()


def _as_list(state: dict) -> list:
    return [(k, tuple(t.shape), t.dtype, t.device.type) for k, t in state.items()]


@pytest.fixture
def cold(monkeypatch, tmp_path):
    """An empty cache, and reference_state taking its cached path (as without timm)."""
    monkeypatch.setenv("HVX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(sig, "sys", types.SimpleNamespace(modules={}))
    return tmp_path


@pytest.mark.parametrize(
    ("variant", "in_chans", "num_types"),
    [
        ("fast_hr_convnext_atto", 6, 5),
        ("convnext_atto", 3, 2),
        ("fast_convnext_pico", 6, 7),
        ("hovernet_resnet50", 3, 5),
        ("hovernet_fast", 3, 6),
    ],
)
def test_cached_signature_equals_the_model_state(cold, variant, in_chans, num_types):
    want = _as_list(_model_state(variant, in_chans, num_types))
    first = sig.reference_state(variant, in_chans, num_types)  # miss: built and written
    path = sig.signature_path(variant, in_chans, num_types)
    assert path.is_file() and path.parent == cold / "arch"
    second = sig.reference_state(variant, in_chans, num_types)  # hit: read back
    assert _as_list(first) == want
    assert _as_list(second) == want


def test_cache_key_names_every_argument(cold):
    paths = {
        sig.signature_path(*a)
        for a in [("convnext_atto", 6, 5), ("convnext_atto", 3, 5), ("convnext_atto", 6, 4)]
    }
    paths.add(sig.signature_path("convnext_pico", 6, 5))
    assert len(paths) == 4


def test_cache_key_follows_the_model_source(cold, monkeypatch):
    before = sig.signature_path("convnext_atto", 6, 5)
    monkeypatch.setattr(sig, "_source_digest", lambda: "0" * 64)
    assert sig.signature_path("convnext_atto", 6, 5) != before


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{not json",
        '{"format": "other", "tensors": []}',
        '{"format": "hvx-state-signature"}',
        '{"format": "hvx-state-signature", "tensors": [["a", [1], "complex32"]]}',
    ],
)
def test_malformed_cache_entry_is_rebuilt(cold, content):
    path = sig.signature_path("convnext_atto", 6, 5)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    got = sig.reference_state("convnext_atto", 6, 5)
    assert _as_list(got) == _as_list(_model_state("convnext_atto", 6, 5))
    assert json.loads(path.read_text())["format"] == "hvx-state-signature"


def test_unwritable_cache_still_gives_the_signature(cold, monkeypatch):
    blocker = cold / "file"
    blocker.write_text("x")
    monkeypatch.setenv("HVX_CACHE_DIR", str(blocker))  # arch/ cannot be made under a file
    got = sig.reference_state("convnext_atto", 6, 5)
    assert _as_list(got) == _as_list(_model_state("convnext_atto", 6, 5))


_NO_TIMM = r"""
import json, sys
from hvx.assets import default_model_path
from hvx.bundle import load_bundle
b = load_bundle(default_model_path())
print(json.dumps(sorted(m for m in ("timm", "torchvision", "torch._dynamo") if m in sys.modules)))
"""


def test_load_bundle_imports_no_timm_on_a_cache_hit(tmp_path):
    env = dict(os.environ, HVX_CACHE_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", _NO_TIMM],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        for _ in range(2)
    ]
    assert "timm" in runs[0]  # a miss builds the model once (on the meta device)
    assert runs[1] == []


def test_no_cache_location_still_gives_the_signature(cold, monkeypatch):
    def no_sources():
        raise FileNotFoundError("no sources")

    monkeypatch.setattr(sig, "_source_digest", no_sources)
    got = sig.reference_state("convnext_atto", 6, 5)
    assert _as_list(got) == _as_list(_model_state("convnext_atto", 6, 5))
    assert not (cold / "arch").exists()
