"""The hovernet bench stage: registered, and it records nothing without the official code."""

from __future__ import annotations

import logging

from hvx.bench import cli, harness
from hvx.bench import hovernet as stage


def test_registered_but_not_default():
    assert stage in cli._STAGES
    assert "hovernet" not in cli.DEFAULT_STAGES


def test_without_the_official_code_it_says_why_and_records_nothing(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HVX_HOVERNET_REFERENCE", str(tmp_path / "absent"))
    ctx = harness.BenchContext(batches=[1], repeats=1, warmup=0)
    assert stage.reference_dir(ctx) == tmp_path / "absent"
    with caplog.at_level(logging.WARNING, logger="hvx.bench"):
        assert stage.run(ctx) == []
    assert any("official code is needed" in r.getMessage() for r in caplog.records)
