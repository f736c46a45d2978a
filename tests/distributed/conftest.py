"""Shared set-up of the distributed tests: small slides, their single-process outputs, and
helpers that bound a test's time and end the Ray processes it started, by PID.

The slides are mosaics of the shipped sample tiles (always installed); the model is
the bundled default (atto) model on the CPU, the engine ``hvx slide`` uses.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

import pytest
from cohort_synth import mosaic_slide

#: Tiling of every distributed test: small batches so regions hold several chunks.
BATCH = 4
#: Region side in pixels: 2 x 2 tiles of the 256 / 64 grid.
REGION_PX = 384
OUTPUTS = ("nuclei.geojson", "nuclei.csv", "nuclei_labels.tif")


def config():
    from hvx.tiling import TilingConfig

    return TilingConfig(tile=256, overlap=64, batch_size=BATCH)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> dict:
    """Two slides (odd size with background cells; a small one) and their
    single-process ``infer_slide`` outputs (the ``hvx slide`` path), computed once."""
    from hvx import Engine
    from hvx.io.slides import open_image
    from hvx.tiling import infer_slide
    from hvx.tiling.pipeline import engine_mpp

    root = tmp_path_factory.mktemp("cohort")
    slides = [
        mosaic_slide(root / "alpha.png", 3, 4, seed=1, blank=0.25, crop=(700, 900)),
        mosaic_slide(root / "beta.png", 2, 3, seed=2),
    ]
    engine = Engine.load(None, device="cpu")
    single = {}
    for s in slides:
        with open_image(s, target_mpp=engine_mpp(engine)) as reader:
            summary = infer_slide(
                engine,
                reader,
                root / "single" / s.stem,
                config=config(),
                labels=True,
                progress=False,
            )
        single[s.stem] = (root / "single" / s.stem, summary)
    return {"root": root, "slides": slides, "single": single}


def assert_same_outputs(cohort: dict, out: Path) -> None:
    """Every slide's GeoJSON / CSV / label TIFF equal the single-process ones, byte for byte;
    the run identity (run.json hash) is the same run; no nucleus id twice."""
    import csv
    import json

    for s in cohort["slides"]:
        ref, _ = cohort["single"][s.stem]
        got = out / s.stem
        for name in OUTPUTS:
            a, b = (ref / name).read_bytes(), (got / name).read_bytes()
            assert a == b, f"{s.stem}/{name} differs from the single-process output"
        assert (
            json.loads((ref / "run.json").read_text())["hash"]
            == json.loads((got / "run.json").read_text())["hash"]
        )
        with open(got / "nuclei.csv", newline="") as f:
            ids = [row["id"] for row in csv.DictReader(f)]
        assert len(ids) == len(set(ids)) > 0


def descendants(pid: int) -> list[int]:
    """PIDs of a process's descendants (psutil)."""
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_pids(pids) -> None:
    """SIGKILLs each PID (those already gone are skipped)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def bounded(fn, seconds: float):
    """Runs ``fn()`` in a thread; fails the test when it takes longer than ``seconds``."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised in the test's thread
            box["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(seconds)
    if th.is_alive():
        pytest.fail(f"expected the run to finish within {seconds} s, it did not")
    if "error" in box:
        raise box["error"]
    return box["value"]


def run_cohort(slides, out: Path, seconds: float, *, tiling=None, workers: int = 1, **kw) -> dict:
    """``run_slides`` with the tests' settings (``config()`` unless ``tiling``), bounded."""
    from hvx.distributed import run_slides

    return bounded(
        lambda: run_slides(
            slides,
            out,
            config=config() if tiling is None else tiling,
            region_px=REGION_PX,
            labels=True,
            workers=workers,
            progress=False,
            **kw,
        ),
        seconds,
    )
