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
    assert records[1].baseline == "torch-fp32" and records[1].speedup > 0
    assert all(r.extra["variant"] == "fast_convnext_atto" and r.size == 32 for r in records)
