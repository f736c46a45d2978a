"""hvx.bench.postprocess: inputs and the native-vs-twin agreement its records carry."""

import numpy as np

from hvx import _postprocess_ref
from hvx.bench import postprocess as stage
from hvx.postprocess import PostprocessConfig


def test_agreement_on_realistic_tiles():
    np_prob, hv, _, _ = stage.realistic_batch(2, 64, seed=0, min_nuclei=5)
    got = stage.agreement(np_prob, hv, PostprocessConfig())
    assert got["native_equals_reference"] is True
    assert got["nuclei_per_tile"] >= 1 and 0 < got["foreground_fraction"] < 1
    assert got["tiles_checked"] == 2


def test_agreement_reports_a_differing_tile(monkeypatch):
    np_prob, hv, _, _ = stage.realistic_batch(2, 64, seed=0, min_nuclei=5)
    real = _postprocess_ref.instances_from_hv_ref
    calls = []

    def off_by_one_on_second_tile(a, h, config):
        inst = real(a, h, config)
        calls.append(1)
        if len(calls) == 2:
            inst = inst.copy()
            inst[0, 0] += 1
        return inst

    monkeypatch.setattr(_postprocess_ref, "instances_from_hv_ref", off_by_one_on_second_tile)
    got = stage.agreement(np_prob, hv, PostprocessConfig())
    assert got["native_equals_reference"] is False and len(calls) == 2
    assert np.isfinite(got["nuclei_per_tile"])
