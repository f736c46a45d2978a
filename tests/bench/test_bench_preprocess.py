import pytest

from hvx.bench import cli, harness
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
    want = records[0].timing.median_ms / fast.timing.median_ms
    assert fast.speedup == pytest.approx(want, rel=1e-9)
    assert fast.extra["threads"] == 1 and fast.batch == 2 and fast.size == 32


def test_bytes_per_tile_formula():
    # 256x256, fp16 6-channel output: 18 bytes per pixel plus the LUTs written and read.
    assert stage.bytes_per_tile(256, 256, 6, 2, 64) == 256 * 256 * 18 + 2 * 3 * 64 * 256
