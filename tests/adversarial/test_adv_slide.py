"""Findings 2, 5, 6, 9 and 12 (issue 23) on the slide / tiled path.

2: a single-level tiled TIFF was read whole for the tissue thumbnail.
5: two runs into one output folder interleaved (no lock).
6: a planted ``<name>.part`` symlink was followed and its target overwritten.
9: an input edited in place between a kill and the resume went unnoticed.
12: "nuclei larger than the tile overlap" was claimed for small cut nuclei;
    ``hvx slide DIR`` said "missing path".
"""

import logging
import os
import socket

import numpy as np
import pytest
from synth import OracleEngine, random_blobs

from hvx.io.slides import SlideReadError, open_image
from hvx.tiling import RunMismatchError, TilingConfig, infer_slide, plan_tiles
from hvx.tiling.resume import FolderLockedError, RunFolder

openslide = pytest.importorskip("openslide", reason="OpenSlide is in the wsi extra")
tifffile = pytest.importorskip("tifffile", reason="tifffile is in the wsi extra")


def _tiled_tiff(path, size=3000, tissue_cols=1000):
    img = np.full((size, size, 3), 245, np.uint8)
    rng = np.random.default_rng(0)
    img[:, :tissue_cols] = rng.integers(0, 255, (size, tissue_cols, 3), dtype=np.uint8)
    tifffile.imwrite(path, img, tile=(256, 256), photometric="rgb", compression="zlib")
    return img


def test_single_level_tiff_thumbnail_is_read_in_bounded_strips(tmp_path, monkeypatch):
    import hvx.io.openslide_reader

    monkeypatch.setattr(hvx.io.openslide_reader, "_THUMB_BAND_BYTES", 1 << 20)  # 1 MiB bands here
    path = tmp_path / "one_level.tif"
    img = _tiled_tiff(path)
    # target_mpp makes open_image use OpenSlide (generic-tiff), which has one level.
    reader = open_image(path, target_mpp=0.5, mpp=0.5)
    assert isinstance(reader._slide, openslide.OpenSlide) and reader._slide.level_count == 1
    sizes = []
    inner = reader._slide.read_region

    def spy(loc, level, size):
        sizes.append(size[0] * size[1])
        return inner(loc, level, size)

    reader._slide.read_region = spy
    thumb = reader.thumbnail(256)
    assert max(thumb.shape[:2]) <= 256 and thumb.shape[2] == 3
    # Never the whole level at once: every read within the band budget (RGBA bytes).
    assert len(sizes) > 4 and max(sizes) * 4 <= 1 << 20, sizes
    assert img.shape[0] * img.shape[1] * 4 > 30 << 20
    # Tissue on the left third, background on the right, as in the pixels.
    assert thumb[:, : thumb.shape[1] // 4].std() > 20
    assert np.abs(thumb[:, -thumb.shape[1] // 4 :].astype(int) - 245).max() <= 1
    reader.close()


def _scene(h=300, w=400, seed=0):
    inst, cls = random_blobs(h, w, h * w // 500, 10, seed=seed)
    image = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return image, inst, cls


def _engine(image, inst, cls, cfg):
    eng = OracleEngine(image, inst, cls, cfg.tile, pad_value=cfg.pad_value)
    for t in plan_tiles(*inst.shape, cfg.tile, cfg.overlap):
        eng.locate(t.y0, t.x0)
    return eng


def test_planted_part_symlink_is_not_followed(tmp_path):
    from hvx.io.slides import ArrayReader

    image, inst, cls = _scene()
    cfg = TilingConfig(tile=128, overlap=32, tissue=False)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / "nuclei.csv.part").symlink_to(victim)
    infer_slide(_engine(image, inst, cls, cfg), ArrayReader(image), out, config=cfg, progress=False)
    assert victim.read_text() == "precious\n"
    assert (out / "nuclei.csv").is_file() and not (out / "nuclei.csv").is_symlink()


def test_part_file_refuses_a_symlink_on_resume(tmp_path):
    from hvx.io.streams import PartFile

    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"x" * 100)
    (tmp_path / "a.csv.part").symlink_to(victim)
    with pytest.raises(ValueError, match="symlink"):
        PartFile(tmp_path / "a.csv", resume_size=10)
    assert victim.read_bytes() == b"x" * 100


def test_second_run_into_a_locked_folder_is_refused_naming_the_holder(tmp_path):
    ident = {"input": "a"}
    first = RunFolder.open(tmp_path / "out", ident, ("nuclei.csv",))
    with pytest.raises(FolderLockedError, match=rf"pid {os.getpid()} on {socket.gethostname()}"):
        RunFolder.open(tmp_path / "out", ident, ("nuclei.csv",))
    first.release()
    RunFolder.open(tmp_path / "out", ident, ("nuclei.csv",)).release()


def test_lock_is_released_after_a_finished_or_failed_run(tmp_path):
    from hvx.io.slides import ArrayReader

    image, inst, cls = _scene()
    cfg = TilingConfig(tile=128, overlap=32, tissue=False)
    eng = _engine(image, inst, cls, cfg)
    out = tmp_path / "out"

    class BoomError(RuntimeError):
        pass

    def stop(r):
        raise BoomError

    with pytest.raises(BoomError):
        infer_slide(eng, ArrayReader(image), out, config=cfg, progress=False, on_region=stop)
    infer_slide(eng, ArrayReader(image), out, config=cfg, progress=False)  # not locked
    RunFolder.open(out, {"x": 1}, (), overwrite=True).release()


def test_input_edited_in_the_middle_is_noticed_on_resume(tmp_path):
    path = tmp_path / "big.tif"
    _tiled_tiff(path, size=2048, tissue_cols=2048)
    with open_image(path) as r:
        before = r.identity()
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(255 - b for b in data[mid : mid + 64])  # same size, same ends
    st = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the mtime put back
    with open_image(path) as r:
        after = r.identity()
    assert before != after


def test_input_identity_change_refuses_resume(tmp_path):
    ident = {"input": {"name": "a", "bytes": 10, "sha256_sampled": "x"}}
    RunFolder.open(tmp_path, ident, ("nuclei.csv",)).release()
    other = {"input": {"name": "a", "bytes": 10, "sha256_sampled": "y"}}
    with pytest.raises(RunMismatchError, match="input"):
        RunFolder.open(tmp_path, other, ("nuclei.csv",))


def test_cut_warning_does_not_blame_the_overlap_for_small_nuclei(caplog):
    from hvx.tiling.pipeline import _warn_cut
    from hvx.tiling.stitch import StitchStats

    cfg = TilingConfig(tile=256, overlap=64)
    with caplog.at_level(logging.WARNING, logger="hvx.tiling"):
        _warn_cut(StitchStats(cut_emitted=3, cut_max_extent=40), cfg)
    assert "larger than the tile overlap" not in caplog.text
    assert "40 px" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hvx.tiling"):
        _warn_cut(StitchStats(cut_emitted=3, cut_max_extent=90), cfg)
    assert "overlap" in caplog.text and "90 px" in caplog.text


def test_a_folder_given_as_slide_says_folder_not_missing(tmp_path):
    with pytest.raises(SlideReadError, match="folder") as e:
        open_image(tmp_path)
    assert "missing" not in str(e.value)


def test_plain_images_are_resampled_to_the_target_mpp(tmp_path):
    import cv2

    img = np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    with open_image(tmp_path / "a.png", target_mpp=0.25, mpp=0.5) as r:
        assert (r.height, r.width) == (600, 400) and r.mpp == pytest.approx(0.25)
        px = r.read(100, 50, 64, 64)
        assert px.shape == (64, 64, 3)
        ref = cv2.resize(img[..., ::-1], (400, 600), interpolation=cv2.INTER_LINEAR)
        assert np.abs(px.astype(int) - ref[100:164, 50:114]).mean() < 8
        assert max(r.thumbnail(100).shape[:2]) <= 100
    tifffile.imwrite(tmp_path / "s.tif", img, photometric="rgb")  # strips: TiffReader
    with open_image(tmp_path / "s.tif", target_mpp=1.0, mpp=0.5) as r:
        assert (r.height, r.width) == (150, 100)
    with open_image(tmp_path / "a.png", target_mpp=0.5, mpp=0.5) as r:
        assert (r.height, r.width) == (300, 200)  # same resolution: no resampling
