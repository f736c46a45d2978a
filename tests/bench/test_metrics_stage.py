import numpy as np
import pytest

from hvx.bench import cli, harness
from hvx.bench import metrics as stage
from hvx.metrics import conic_scores, conic_scores_ref


def test_synthetic_pairs_are_conic_like():
    true, pred, source = stage.make_conic_pairs(2, seed=1, synthetic=True)
    assert source == "synthetic"
    assert true.shape == pred.shape == (2, 256, 256, 2)
    assert true.dtype == pred.dtype == np.int32
    assert 60 <= np.unique(true[0, ..., 0]).size - 1 <= 101
    assert set(np.unique(pred[..., 1])) <= set(range(7))
    scores = conic_scores(true, pred)
    assert 0.3 < scores.pq < 0.95  # a plausible, imperfect prediction


def test_consep_pairs_have_about_100_nuclei(consep_dir):
    true, _, source = stage.make_conic_pairs(2, seed=2, folder=consep_dir)
    assert source == "consep"
    for t in true:
        assert 70 <= np.unique(t[..., 0]).size - 1 <= 120


def test_stage_is_registered_and_records_speedups(monkeypatch):
    assert stage in cli._STAGES
    monkeypatch.setattr(stage, "consep_dir", lambda: None)  # keep it fast: synthetic inputs
    records = stage.run(harness.BenchContext(batches=[1], repeats=1, warmup=0, quick=True))
    impls = [r.impl for r in records]
    assert impls[0] == "reference" and "native-1t" in impls
    for r in records[1:]:
        assert r.baseline == "reference"
        want = records[0].timing.median_ms / r.timing.median_ms
        assert r.speedup == pytest.approx(want, rel=1e-9)
    agree = records[0].extra["agreement"]
    assert agree["tp_fp_fn_identical"] is True and agree["max_abs_sum_iou_diff"] < 1e-9
    assert agree["pq_native"] == pytest.approx(agree["pq_reference"], abs=1e-12)


def test_agreement_reports_a_wrong_count():
    true, pred, _ = stage.make_conic_pairs(2, seed=1, synthetic=True)
    native, reference = conic_scores(true, pred), conic_scores_ref(true, pred)
    assert stage.agreement(native, reference)["tp_fp_fn_identical"] is True
    reference.stats[1, 0] += 1  # one more true positive in class 1
    reference.stats[2, 3] += 0.5
    agree = stage.agreement(native, reference)
    assert agree["tp_fp_fn_identical"] is False
    assert agree["max_abs_sum_iou_diff"] == pytest.approx(0.5)
