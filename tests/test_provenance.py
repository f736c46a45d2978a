"""hvx.provenance: the header of every recorded result, written atomically."""

import json
import os

import pytest

from hvx import provenance as prov
from hvx.features import machine_summary

#: The fields benchmarks/schema/bench-result.schema.json requires of a provenance block.
SCHEMA_FIELDS = {"date", "hvx", "git_sha", "python", "platform", "cpu", "cpu_count", "gpu"}


def test_provenance_embeds_the_one_machine_description():
    doc = prov.provenance()
    machine = machine_summary()
    assert {k: doc[k] for k in machine} == machine  # the same description as `hvx info`
    assert SCHEMA_FIELDS | {"versions", "cpu_model"} == set(doc)
    assert doc["cpu_count"] == os.cpu_count()
    assert doc["versions"]["torch"]
    assert doc["date"][:2] == "20" and doc["date"].endswith("+00:00")


def test_git_sha_of_this_checkout_or_unknown(monkeypatch):
    sha = prov._git_sha()
    assert sha == "unknown" or (len(sha) == 40 and int(sha, 16) >= 0)

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(prov.subprocess, "run", no_git)
    assert prov._git_sha() == "unknown"


def test_write_json_is_atomic_and_makes_parents(tmp_path, monkeypatch):
    out = tmp_path / "sub" / "r.json"
    prov.write_json(out, {"provenance": prov.provenance(), "x": [1, 2]})
    assert json.loads(out.read_text())["x"] == [1, 2]
    assert out.read_text().endswith("\n")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        prov.write_json(out, {"x": "new"})
    assert json.loads(out.read_text())["x"] == [1, 2]  # the old file survives
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temp left behind
