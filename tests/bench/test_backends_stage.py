import pytest

from hvx.bench import backends, harness


def test_backends_stage_measures_onnxruntime_against_torch_on_cpu():
    ctx = harness.BenchContext(
        batches=[1],
        size=32,
        repeats=1,
        warmup=0,
        device="cpu",
        options={"variants": ["fast_convnext_atto"]},
    )
    records = backends.run(ctx)
    assert [r.impl for r in records] == ["torch-fp32", "onnxruntime"]
    assert records[1].baseline == "torch-fp32"
    # one paired round: the ratio is the baseline time over hvx's, from the same samples
    want = records[0].timing.median_ms / records[1].timing.median_ms
    assert records[1].speedup == pytest.approx(want, rel=1e-9)
    assert all(r.extra["variant"] == "fast_convnext_atto" and r.size == 32 for r in records)
