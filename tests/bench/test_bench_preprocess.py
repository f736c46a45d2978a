import pytest

from hvx.bench import cli, harness, paired
from hvx.bench import preprocess as stage


def test_stage_is_registered():
    assert stage in cli._STAGES
    assert stage.NAME == "preprocess"


def test_cpu_stage_measures_numba_against_the_reference():
    ctx = harness.BenchContext(batches=[2], size=32, repeats=1, warmup=0, options={"threads": 1})
    records = stage.run(ctx)
    assert [r.impl for r in records] == ["reference", "numba"]
    fast = records[1]
    assert fast.baseline == "reference"
    # one round: the paired ratio is the baseline's time over hvx's
    want = records[0].timing.median_ms / fast.timing.median_ms
    assert fast.speedup == pytest.approx(want, rel=1e-9)
    assert fast.extra["paired_ratio"]["n"] == 1
    assert fast.extra["threads"] == 1 and fast.batch == 2 and fast.size == 32
    assert records[0].extra["inputs"] == fast.extra["inputs"]


def test_cpu_stage_speedup_is_the_median_of_per_round_ratios(monkeypatch):
    rounds = {"reference": [4.0, 9.0, 6.0], "numba": [2.0, 1.0, 3.0]}
    monkeypatch.setattr(paired, "interleaved", lambda fns, n, warm: {k: rounds[k][:n] for k in fns})
    ctx = harness.BenchContext(batches=[1], size=32, repeats=3, warmup=0, options={"threads": 1})
    ref, fast = stage.run(ctx)
    assert fast.speedup == pytest.approx(2.0)  # ratios 2, 9, 2 (medians' ratio: 3)
    assert ref.timing.median_ms == pytest.approx(6000.0)
    assert fast.extra["paired_ratio"]["p75"] == pytest.approx(5.5)


def test_bytes_per_tile_formula():
    # 256x256, fp16 6-channel output: 18 bytes per pixel plus the LUTs written and read.
    assert stage.bytes_per_tile(256, 256, 6, 2, 64) == 256 * 256 * 18 + 2 * 3 * 64 * 256
