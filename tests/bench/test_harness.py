import json

import pytest

from hvx.bench import harness


def test_time_call_counts_warmup_and_repeats():
    calls = []
    t = harness.time_call(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5
    assert t.repeats == 3
    assert 0 <= t.min_ms <= t.p20_ms <= t.median_ms <= t.p80_ms


def test_time_call_syncs_around_each_call():
    events = []
    harness.time_call(
        lambda: events.append("f"), warmup=0, repeats=2, sync=lambda: events.append("s")
    )
    assert events == ["s", "f", "s", "s", "f", "s"]


def test_time_call_rejects_bad_counts():
    with pytest.raises(ValueError, match="expected repeats >= 1"):
        harness.time_call(lambda: None, repeats=0)


def test_quantile_interpolates():
    assert harness._quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5


def test_record_json(tmp_path):
    t = harness.Timing(10.0, 9.0, 11.0, 8.0, 3)
    r = harness.Record("x", "native", batch=4, size=256, timing=t, baseline="ref", speedup=2.0)
    assert r.tiles_per_s == pytest.approx(400.0)
    doc = json.loads(json.dumps(r.to_json()))
    assert doc["tiles_per_s"] == pytest.approx(400.0)
    assert doc["ms_per_batch"] == 10.0 and doc["timing"]["p80_ms"] == 11.0


def test_peak_rss_positive():
    assert harness.peak_rss_mb() > 1
