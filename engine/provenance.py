"""Where a result came from: the header every recorded result carries, and its writer.

:func:`provenance` is recorded by ``hvx-bench``, ``hvx-train`` (the run log),
``hvx-train evaluate --json`` and the scripts in ``benchmarks/``: date, hvx version,
git SHA, the machine (:func:`hvx.features.machine_summary`, the one description of
the host) and the versions of every probed library. :func:`write_json` writes such a
document atomically. This module sits below the benchmark harness and the trainer
so that neither depends on the other.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
from pathlib import Path

from hvx._version import __version__
from hvx.features import features, machine_summary
from hvx.io.atomic import atomic_write

__all__ = ["provenance", "write_json"]


def _git_sha() -> str:
    """HEAD of the checkout hvx runs from, or "unknown" (an installed wheel, no git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def provenance() -> dict:
    """Machine, versions, git SHA and date for a results file.

    Returns:
        ``{"date" (ISO 8601, UTC, seconds), "hvx", "git_sha", **machine_summary(),
        "versions": {library: version}}``; the field names are those of
        ``benchmarks/schema/bench-result.schema.json`` and of every recorded result.
    """
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "hvx": __version__,
        "git_sha": _git_sha(),
        **machine_summary(),
        "versions": {name: p.version for name, p in features().rows() if p.version},
    }


def write_json(path: str | os.PathLike, doc: dict) -> None:
    """Writes ``doc`` as indented JSON atomically (temp file + rename), parents created."""
    atomic_write(path, json.dumps(doc, indent=2) + "\n")
