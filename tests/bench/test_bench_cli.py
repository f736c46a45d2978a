"""hvx-bench harness pieces: OOM back-off, stage selection, failures, schema, inputs."""

import json
from pathlib import Path

import pytest
import torch

from hvx.bench import _inputs, _jsonschema, cli, harness

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "benchmarks/schema/bench-result.schema.json"


@pytest.fixture(scope="module")
def schema():
    return json.loads(SCHEMA_PATH.read_text())


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the shared 2-core box: 2 threads oversubscribe it
    yield
    torch.set_num_threads(before)


def _fake_oom(batch_limit):
    calls = []

    def fn(batch):
        calls.append(batch)
        if batch > batch_limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {batch} GiB")
        return f"ran {batch}"

    return fn, calls


# ---------------------------------------------------------------- OOM back-off


def test_backoff_halves_until_it_fits():
    fn, calls = _fake_oom(batch_limit=2)
    freed = []
    result, used, backoffs = harness.with_backoff(fn, 8, on_oom=lambda: freed.append(1))
    assert (result, used) == ("ran 2", 2)
    assert calls == [8, 4, 2] and len(freed) == 2
    assert [b["batch"] for b in backoffs] == [8, 4]
    assert "out of memory" in backoffs[0]["error"]


def test_backoff_gives_up_at_batch_one_and_passes_other_errors():
    fn, _ = _fake_oom(batch_limit=0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        harness.with_backoff(fn, 4, on_oom=lambda: None)

    def broken(batch):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        harness.with_backoff(broken, 4)
    with pytest.raises(ValueError, match="expected batch >= 1, got 0"):
        harness.with_backoff(broken, 0)


def test_is_oom():
    assert harness.is_oom(torch.cuda.OutOfMemoryError("x"))
    assert harness.is_oom(RuntimeError("CUDA error: out of memory"))
    assert harness.is_oom(MemoryError())
    assert not harness.is_oom(RuntimeError("shape mismatch"))
    assert not harness.is_oom(ValueError("out of memory"))


class _OomStage:
    """A stage whose batches above 2 run out of memory."""

    NAME = "network"
    HELP = "fake"

    @staticmethod
    def run(ctx):
        def one(batch):
            if batch > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
            return harness.measure("network", "fake", batch, ctx.size, lambda: None, ctx)

        records = []
        for b in ctx.batches:
            rec, _, backoff = harness.with_backoff(one, b)
            if backoff:
                rec.requested_batch, rec.backoff = b, backoff
            rec.baseline, rec.speedup, rec.extra = "fake-ref", 1.5, {"variant": "v"}
            records.append(rec)
        return records


class _BrokenStage:
    NAME = "e2e"
    HELP = "fails"

    @staticmethod
    def run(ctx):
        raise RuntimeError("no engine here")


def test_backoff_is_recorded_printed_and_valid(tmp_path, monkeypatch, capsys, schema):
    monkeypatch.setattr(cli, "_STAGES", (_OomStage, _BrokenStage))
    out = tmp_path / "r.json"
    code = cli.main(
        ["--stages", "network,e2e", "--batch", "1,8", "--device", "cpu", "--json", str(out)]
    )
    assert code == 1  # a stage failed; the other's numbers are kept
    text = capsys.readouterr()
    assert "out of memory at batch 8 -> 4; measured at 2" in text.out
    assert "stage e2e FAILED: RuntimeError: no engine here" in text.err
    doc = json.loads(out.read_text())
    assert _jsonschema.validate(doc, schema) == []
    small, big = doc["records"]
    assert small["backoff"] == [] and small["requested_batch"] is None
    assert big["batch"] == 2 and big["requested_batch"] == 8
    assert [b["batch"] for b in big["backoff"]] == [8, 4]
    assert big["memory_scope"] in ("record", "process") and big["peak_rss_mb"] > 0
    assert doc["failures"][0]["stage"] == "e2e"
    assert doc["run"]["load_average_start"] is None or len(doc["run"]["load_average_start"]) == 3


# ---------------------------------------------------------------- stage selection


def test_unknown_stage_is_a_usage_error(capsys):
    assert cli.main(["--stages", "preprocess,nope"]) == 2
    err = capsys.readouterr().err
    assert "got unknown ['nope']" in err and "e2e" in err


@pytest.mark.parametrize(
    ("text", "match"),
    [("", "expected at least one stage"), ("metrics,metrics", "expected each stage once")],
)
def test_select_stages_errors(text, match):
    with pytest.raises(ValueError, match=match):
        cli.select_stages(text)


def test_all_issue_stages_are_registered_in_order():
    assert [s.NAME for s in cli.select_stages("preprocess,network,postprocess,metrics,e2e")] == [
        "preprocess",
        "network",
        "postprocess",
        "metrics",
        "e2e",
    ]
    assert [s.NAME for s in cli._STAGES][:5] == [
        "preprocess",
        "network",
        "postprocess",
        "metrics",
        "e2e",
    ]


def test_bad_batch_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--batch", "0,8"])
    assert "expected positive integers" in capsys.readouterr().err


# ---------------------------------------------------------------- a quick-style run


@pytest.mark.usefixtures("consep_dir")
def test_quick_style_run_validates_against_the_schema(tmp_path, capsys, schema):
    out = tmp_path / "quick.json"
    code = cli.main(
        [
            *("--quick", "--stages", "preprocess,postprocess", "--batch", "1", "--size", "32"),
            *("--device", "cpu", "--json", str(out)),
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "reference" in table and "x" in table
    doc = json.loads(out.read_text())
    assert _jsonschema.validate(doc, schema) == []
    assert {r["stage"] for r in doc["records"]} == {"preprocess", "postprocess"}
    assert all(r["speedup"] for r in doc["records"] if r["baseline"])
    assert all(r["memory_scope"] == "stage" for r in doc["records"])
    assert doc["provenance"]["git_sha"] and doc["run"]["quick"] is True


@pytest.mark.usefixtures("consep_dir")
def test_network_and_e2e_tiny_run(tmp_path, capsys, schema):
    pytest.importorskip("hvx.engine", reason="hvx.Engine not on this branch yet")
    out = tmp_path / "net.json"
    code = cli.main(
        [
            *("--quick", "--stages", "network,e2e", "--batch", "1", "--size", "64"),
            *("--variant", "fast_convnext_atto", "--backend", "torch", "--device", "cpu"),
            *("--json", str(out)),
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert _jsonschema.validate(doc, schema) == [] and doc["failures"] == []
    by = {(r["stage"], r["impl"]): r for r in doc["records"]}
    net = by[("network", "torch-fp32")]
    assert net["extra"]["gflop_per_tile"] > 0 and net["extra"]["variant"] == "fast_convnext_atto"
    e2e = [r for r in doc["records"] if r["stage"] == "e2e" and r["baseline"]]
    assert len(e2e) == 1 and e2e[0]["impl"] == "engine-torch-fp32"
    assert e2e[0]["extra"]["weights"] == "random-seed0"
    assert "post-processing time depends on the predicted maps" in e2e[0]["extra"]["weights_note"]
    # Same tiles, same weights: both pipelines find the same number of nuclei.
    base = next(r for r in doc["records"] if r["stage"] == "e2e" and not r["baseline"])
    assert base["extra"]["nuclei_per_tile"] == e2e[0]["extra"]["nuclei_per_tile"]


# ---------------------------------------------------------------- pieces


def test_schema_validator_reports_what_it_expected(schema):
    doc = {"schema": "hvx-bench/0", "records": [{"stage": "x"}]}
    errors = _jsonschema.validate(doc, schema)
    assert "$.schema: expected 'hvx-bench/1', got 'hvx-bench/0'" in errors
    assert any(e.startswith("$.records[0]: expected key 'timing'") for e in errors)
    with pytest.raises(ValueError, match="expected schema keywords"):
        _jsonschema.validate(1, {"pattern": "x"})


def test_schema_agrees_with_jsonschema_when_installed(schema):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)


def test_real_tiles_never_fall_back_to_synthetic(tmp_path, monkeypatch):
    monkeypatch.setenv("HVX_CONSEP_DIR", str(tmp_path))
    monkeypatch.setattr(_inputs, "_packaged_samples", list)
    with pytest.raises(FileNotFoundError, match="expected real H&E tiles"):
        _inputs.real_tiles(1, 64)
    with pytest.raises(ValueError, match="expected n >= 1 and size >= 1, got n=0"):
        _inputs.real_tiles(0, 64)


@pytest.mark.usefixtures("consep_dir")
def test_real_tiles_mosaic_and_crop():
    big, source = _inputs.real_tiles(2, 300)
    small, _ = _inputs.real_tiles(2, 40)
    assert big.shape == (2, 300, 300, 3) and small.shape == (2, 40, 40, 3)
    assert big.dtype == small.dtype == "uint8" and "CoNSeP" in source
    assert big.std() > 10  # real tissue, not a constant


def test_flops_per_tile_is_cached_and_scales_with_area():
    harness.flops_per_tile.cache_clear()
    a = harness.flops_per_tile("fast_convnext_atto", 64)
    b = harness.flops_per_tile("fast_convnext_atto", 128)
    assert a > 0 and b == pytest.approx(4 * a, rel=0.05)
    assert harness.flops_per_tile.cache_info().hits == 0
    harness.flops_per_tile("fast_convnext_atto", 64)
    assert harness.flops_per_tile.cache_info().hits == 1


def test_peaks_reset_and_device_helpers_on_cpu():
    assert harness.device_peak_mb("cpu") is None and harness.device_sync("cpu") is None
    assert harness.device_peaks("cpu") is None
    harness.reset_peaks("cpu")
    assert harness.peak_rss_mb() > 1


def test_format_table_shows_ratio_and_device_fractions():
    t = harness.Timing(10.0, 9.0, 11.0, 8.0, 3)
    r = harness.Record(
        "network",
        "torch-fp16",
        8,
        256,
        t,
        baseline="torch-fp32",
        speedup=3.0,
        extra={
            "variant": "convnext_small",
            "achieved_tflops": 300.0,
            "fraction_of_matmul_peak": 0.4,
        },
        device="cuda",
        peak_device_mb=1234.0,
    )
    text = cli.format_table([r])
    assert "3.00x" in text and "convnext_small" in text and "1234d" in text
    assert "300.0 TFLOP/s = 40% of the measured fp16 matmul peak" in text


def test_bad_threads_is_a_usage_error(capsys):
    assert cli.main(["--threads", "0", "--stages", "metrics"]) == 2
    assert "expected --threads >= 1, got 0" in capsys.readouterr().err


def test_time_call_records_process_cpu_time():
    t = harness.time_call(lambda: sum(range(20000)), warmup=0, repeats=3)
    assert t.cpu_median_ms is not None and t.cpu_median_ms >= 0


def test_unknown_variant_is_a_usage_error(capsys):
    assert cli.main(["--variant", "convnext_huge", "--stages", "network"]) == 2
    assert "got ['convnext_huge']" in capsys.readouterr().err
