import sys
from pathlib import Path

import numpy as np
import pytest

from hvx.cli import build_parser
from hvx.cli.slide import is_large_input, run_tiled

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tiling"))


def test_slide_command_parses():
    args = build_parser().parse_args(
        ["slide", "x.svs", "--model", "m", "--out", "o", "--overlap", "96", "--labels"]
    )
    assert args.overlap == 96 and args.labels and args.tile == 512 and args.level is None


def test_is_large_input(tmp_path):
    import cv2
    import tifffile

    small = tmp_path / "s.png"
    cv2.imwrite(str(small), np.zeros((64, 64, 3), np.uint8))
    assert not is_large_input(small)
    assert is_large_input(small, max_pixels=100)
    big = tmp_path / "b.tif"
    tifffile.imwrite(big, np.zeros((300, 300, 3), np.uint8), photometric="rgb")
    assert is_large_input(big, max_pixels=300 * 299) and not is_large_input(big)
    assert is_large_input(tmp_path / "whatever.svs")


def test_run_tiled_prints_a_summary(tmp_path, capsys):
    import tifffile
    from synth import OracleEngine, random_blobs

    from hvx.tiling import plan_tiles

    inst, cls = random_blobs(500, 400, 300, 10, seed=1)
    image = np.random.default_rng(1).integers(0, 255, (500, 400, 3), dtype=np.uint8)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, image, photometric="rgb")
    args = build_parser().parse_args(
        [
            "slide",
            str(path),
            "--model",
            "m",
            "--out",
            str(tmp_path / "o"),
            "--tile",
            "128",
            "--overlap",
            "32",
            "--no-tissue",
            "--labels",
            "--no-progress",
        ]
    )
    eng = OracleEngine(image, inst, cls, 128)
    eng.model_mpp = None
    for t in plan_tiles(500, 400, 128, 32):
        eng.locate(t.y0, t.x0)
    pytest.importorskip("hvx.io", reason="hvx.io (engine branch) not merged yet")
    s = run_tiled(args, eng, path, tmp_path / "o")
    out = capsys.readouterr().out
    assert f"{s['nuclei']} nuclei" in out and "tiles/s" in out and "peak memory" in out
