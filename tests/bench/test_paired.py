"""hvx.bench.paired: interleaving order, warm-ups, paired ratios, thread pinning."""

import numpy as np
import pytest
import torch

from hvx.bench import harness, paired


def test_interleaved_alternates_and_warms_up():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = paired.interleaved(fns, rounds=3, warmup={"a": 1, "b": 0})
    assert calls == ["a", "a", "b", "a", "b", "a", "b"]
    assert [len(v) for v in times.values()] == [3, 3]
    with pytest.raises(ValueError, match="rounds >= 1"):
        paired.interleaved(fns, rounds=0)


def test_paired_ratio_is_per_round():
    base = [2.0, 4.0, 6.0, 8.0]
    other = [1.0, 1.0, 3.0, 2.0]  # ratios 2, 4, 2, 4
    r = paired.paired_ratio(base, other)
    assert r["median"] == pytest.approx(3.0) and r["n"] == 4
    assert (r["p25"], r["p75"]) == (pytest.approx(2.0), pytest.approx(4.0))
    # a ratio of medians would say 5 / 1.5 = 3.33: the pairing matters
    assert np.median(base) / np.median(other) != pytest.approx(r["median"])
    with pytest.raises(ValueError, match="paired"):
        paired.paired_ratio([1.0], [1.0, 2.0])


def test_timing_is_in_milliseconds():
    t = paired.timing([0.001, 0.003, 0.002])
    assert isinstance(t, harness.Timing)
    assert (t.median_ms, t.min_ms, t.repeats) == (pytest.approx(2.0), pytest.approx(1.0), 3)


def test_pin_threads_sets_every_pool(monkeypatch):
    import cv2

    for k in paired.THREAD_ENV:  # setenv first so monkeypatch restores what pin_threads sets
        monkeypatch.setenv(k, "0")
        monkeypatch.delenv(k)
    before = torch.get_num_threads(), cv2.getNumThreads()
    try:
        pins = paired.pin_threads(1)
        assert pins["torch_intra_op"] == 1 and pins["opencv"] == 1
        assert pins["env"] == {k: "1" for k in paired.THREAD_ENV}
        assert pins["numba"] in (1, None)
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
    with pytest.raises(ValueError, match="n >= 1"):
        paired.pin_threads(0)


def test_measure_pair_records_the_paired_speedup():
    ctx = harness.BenchContext(batches=[1], size=8, repeats=4, warmup=1, device="cpu")
    base, mine = paired.measure_pair(
        "x", ("slow", lambda: sum(range(20000))), ("fast", lambda: 1), 1, 8, ctx
    )
    assert mine.baseline == "slow" and mine.speedup == mine.extra["paired_ratio"]["median"]
    assert mine.speedup > 0 and base.timing.repeats == 4  # no timed assert: only the wiring
