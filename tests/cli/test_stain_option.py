"""``--stain-norm`` / ``--stain-target`` of ``hvx infer`` and ``hvx slide``."""

import json

import cv2
import numpy as np
import pytest

from hvx.assets import sample_paths
from hvx.cli import main
from hvx.io import read_image
from hvx.stain import StainNormalizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HVX_CACHE_DIR", str(tmp_path / "cache"))


def _restain(rgb: np.ndarray) -> np.ndarray:
    """Another lab's look: hue turned, darker."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + 10) % 180
    hsv[..., 2] = np.clip(hsv[..., 2] * 0.8, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


@pytest.fixture
def tiles(tmp_path):
    """Two re-stained sample tiles (256 x 256) as PNG files."""
    folder = tmp_path / "in"
    folder.mkdir()
    for k, p in enumerate(sample_paths()[:2]):
        cv2.imwrite(str(folder / f"t{k}.png"), _restain(read_image(p))[..., ::-1])
    return folder


def _infer(*args):
    return main(["infer", *map(str, args), "--no-progress", "--backend", "torch"])


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
def test_infer_runs_the_normalised_image(method, tiles, tmp_path, capsys):
    """Results are those of the engine on the normalised image; overlays show the input."""
    from hvx.engine import Engine

    out, raw = tmp_path / "out", tmp_path / "raw"
    fmt = ("--format", "npy,overlay")
    assert _infer(tiles, "--out", out, "--stain-norm", method, *fmt) == 0
    assert _infer(tiles, "--out", raw, *fmt) == 0
    engine = Engine.load(None, backend="torch")
    norm = StainNormalizer(method)
    changed = 0
    for k in range(2):
        image = read_image(tiles / f"t{k}.png")
        want = engine.infer(norm(image)).inst[0]
        got = np.load(out / f"t{k}_inst.npy")
        np.testing.assert_array_equal(got, want)
        changed += not np.array_equal(got, np.load(raw / f"t{k}_inst.npy"))
        overlay = read_image(out / f"t{k}_overlay.png")
        background = got == 0
        background = cv2.erode(background.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        np.testing.assert_array_equal(overlay[background], image[background])
    assert changed == 2  # the option made a difference on these tiles
    record = json.loads((out / "hvx-run.json").read_text())
    assert record["stain"] == norm.identity()
    assert "stain" not in json.loads((raw / "hvx-run.json").read_text())


def test_infer_record_refuses_another_normalisation(tiles, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    assert _infer(tiles, "--out", out, "--stain-norm", "reinhard", "--format", "csv") == 0
    assert caplog.text.count("the colour statistics of a small tile") == 1  # once, not per tile
    capsys.readouterr()
    assert _infer(tiles, "--out", out, "--stain-norm", "reinhard", "--format", "csv") == 0
    assert "0 processed, 2 skipped" in capsys.readouterr().out
    for other in (["--stain-norm", "macenko"], []):
        assert _infer(tiles, "--out", out, "--format", "csv", *other) == 2
        assert "differs in stain" in caplog.text
    target = tmp_path / "target.png"
    cv2.imwrite(str(target), read_image(sample_paths()[3])[..., ::-1])
    args = ["--stain-norm", "reinhard", "--stain-target", target]
    assert _infer(tiles, "--out", out, "--format", "csv", *args) == 2  # another target


def test_stain_target_from_an_image(tiles, tmp_path):
    out = tmp_path / "out"
    target = tmp_path / "target.png"
    cv2.imwrite(str(target), read_image(sample_paths()[3])[..., ::-1])
    args = ["--stain-norm", "macenko", "--stain-target", target, "--format", "csv"]
    assert _infer(tiles, "--out", out, *args) == 0
    record = json.loads((out / "hvx-run.json").read_text())
    want = StainNormalizer.from_image("macenko", read_image(target)).identity()
    assert record["stain"] == json.loads(json.dumps(want))


def test_stain_argument_errors(tiles, tmp_path, caplog):
    out = tmp_path / "out"
    assert _infer(tiles, "--out", out, "--stain-target", tiles / "t0.png") == 2
    assert "expected --stain-norm reinhard|macenko with --stain-target" in caplog.text
    missing = tmp_path / "absent.png"
    assert _infer(tiles, "--out", out, "--stain-norm", "reinhard", "--stain-target", missing) == 2
    assert "expected an H&E image or a folder of them for --stain-target" in caplog.text
    with pytest.raises(SystemExit) as exc:
        _infer(tiles, "--out", out, "--stain-norm", "vahadane")
    assert exc.value.code == 2


def test_blank_image_fails_alone(tiles, tmp_path, capsys, caplog):
    """Macenko cannot measure stains on a blank image: that image fails, the others run."""
    cv2.imwrite(str(tiles / "blank.png"), np.full((64, 64, 3), 250, np.uint8))
    out = tmp_path / "out"
    assert _infer(tiles, "--out", out, "--stain-norm", "macenko", "--format", "csv") == 1
    assert "2 processed, 0 skipped (already done), 1 failed" in capsys.readouterr().out
    assert "blank.png: stain normalisation" in caplog.text


def test_slide_normalises_every_region_with_one_fit(tmp_path, capsys):
    """A large TIFF through hvx slide: the regions are mapped with the slide's one fit."""
    import tifffile

    from hvx.engine import Engine
    from hvx.io.slides import ArrayReader
    from hvx.stain import NormalizedReader
    from hvx.tiling import TilingConfig, infer_slide

    tile = _restain(read_image(sample_paths()[0]))
    image = np.full((512, 600, 3), 240, np.uint8)  # glass around two tissue pieces
    image[:256, :256], image[256:, 300:556] = tile, tile[::-1]
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, image, photometric="rgb")
    args = [str(path), "--out", str(tmp_path / "o"), "--tile", "256", "--overlap", "32"]
    args += ["--no-progress", "--stain-norm", "reinhard", "--no-tissue"]
    assert main(["slide", *args]) == 0
    got = (tmp_path / "o" / "nuclei.csv").read_text()
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert json.dumps(run).count('"stain"') == 1
    engine = Engine.load(None)  # as hvx slide loads it
    reader = NormalizedReader(ArrayReader(image), StainNormalizer("reinhard"))
    config = TilingConfig(tile=256, overlap=32, tissue=False)
    infer_slide(engine, reader, tmp_path / "ref", config=config, progress=False)
    assert (tmp_path / "ref" / "nuclei.csv").read_text() == got
    assert main(["slide", *args[:-4], "--no-progress", "--stain-norm", "macenko"]) == 2


def test_stain_target_from_a_folder(tiles, tmp_path, caplog):
    """A folder of reference images: the median of their fits (empty folder refused)."""
    refs = tmp_path / "refs"
    refs.mkdir()
    for k in (2, 3):
        cv2.imwrite(str(refs / f"r{k}.png"), read_image(sample_paths()[k])[..., ::-1])
    out = tmp_path / "out"
    args = ["--stain-norm", "reinhard", "--stain-target", refs, "--format", "csv"]
    assert _infer(tiles, "--out", out, *args) == 0
    images = [read_image(refs / f"r{k}.png") for k in (2, 3)]
    want = StainNormalizer.from_images("reinhard", images).identity()
    record = json.loads((out / "hvx-run.json").read_text())
    assert record["stain"] == json.loads(json.dumps(want))
    (tmp_path / "empty").mkdir()
    args = ["--stain-norm", "reinhard", "--stain-target", tmp_path / "empty"]
    assert _infer(tiles, "--out", tmp_path / "o2", *args) == 2
    assert "at least one image" in caplog.text
