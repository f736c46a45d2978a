import numpy as np
import pytest

from hvx.io.slides import (
    ArrayReader,
    OpenSlideReader,
    SlideReadError,
    TiffReader,
    open_image,
    tissue_mask,
)

tifffile = pytest.importorskip("tifffile")
openslide = pytest.importorskip("openslide")

RNG = np.random.default_rng(0)
IMG = RNG.integers(0, 255, (700, 900, 3), dtype=np.uint8)


def _svs(path, img, mpp=0.25):
    desc = "Aperio Image Library v10.0 \n{w}x{h} [0,0 {w}x{h}] (256x256) -> {w}x{h}"
    desc = desc.format(w=img.shape[1], h=img.shape[0])
    if mpp is not None:
        desc += f"|AppMag = 40|MPP = {mpp}"
    with tifffile.TiffWriter(path) as tw:
        tw.write(img, tile=(256, 256), photometric="rgb", description=desc, metadata=None)
        small = np.ascontiguousarray(img[::2, ::2])
        tw.write(
            small, tile=(256, 256), photometric="rgb", description=desc + " -> half", metadata=None
        )
    return path


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"compression": "zlib", "tile": (128, 128)}, {"compression": "zlib", "rowsperstrip": 37}],
    ids=["contiguous", "tiled-zlib", "strips-zlib"],
)
def test_tiff_reader_regions(tmp_path, kwargs):
    p = tmp_path / "big.tif"
    tifffile.imwrite(p, IMG, photometric="rgb", **kwargs)
    with open_image(p) as r:
        assert isinstance(r, TiffReader) and (r.height, r.width) == IMG.shape[:2]
        for y, x, h, w in [(0, 0, 700, 900), (13, 250, 256, 256), (600, 800, 100, 100)]:
            assert np.array_equal(r.read(y, x, h, w), IMG[y : y + h, x : x + w])
        assert r.thumbnail(100).shape[0] <= 100
        with pytest.raises(ValueError, match="expected a region inside"):
            r.read(650, 0, 100, 10)


def test_truncated_tiff_is_a_clear_error(tmp_path):
    p = tmp_path / "cut.tif"
    tifffile.imwrite(p, IMG, photometric="rgb", compression="zlib", tile=(128, 128))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideReadError), open_image(p) as r:
        r.read(500, 700, 200, 200)


def test_png_goes_through_an_array_reader(tmp_path):
    import cv2

    p = tmp_path / "x.png"
    cv2.imwrite(str(p), IMG[..., ::-1])
    r = open_image(p)
    assert isinstance(r, ArrayReader) and np.array_equal(r.read(5, 6, 10, 10), IMG[5:15, 6:16])
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(SlideReadError, match="expected a PNG/JPEG/TIFF image or a slide"):
        open_image(tmp_path / "bad.png")
    with pytest.raises(SlideReadError, match="missing path"):
        open_image(tmp_path / "missing.png")


def test_openslide_levels_mpp_and_resampling(tmp_path):
    p = _svs(tmp_path / "s.svs", IMG)
    with open_image(p) as r:
        assert isinstance(r, OpenSlideReader) and r.mpp == pytest.approx(0.25)
        assert np.array_equal(r.read(10, 20, 100, 120), IMG[10:110, 20:140])
    half = OpenSlideReader(p, target_mpp=0.5)  # level 1 matches exactly
    assert half.level == 1 and half.scale == 1.0 and half.mpp == pytest.approx(0.5)
    assert (half.height, half.width) == (350, 450)
    lv1 = OpenSlideReader(p, level=1)
    assert np.array_equal(lv1.read(0, 0, 50, 50), IMG[::2, ::2][:50, :50])
    third = OpenSlideReader(p, target_mpp=0.75)  # between levels: level 1, resampled
    assert third.level == 1 and third.scale == pytest.approx(1.5)
    assert (third.height, third.width) == (233, 300)
    assert third.read(0, 0, 64, 64).shape == (64, 64, 3)
    assert third.mpp == pytest.approx(0.75)


def test_openslide_bad_inputs(tmp_path):
    p = _svs(tmp_path / "s.svs", IMG)
    with pytest.raises(SlideReadError, match=r"expected a level in \[0, 1\].*got 5"):
        OpenSlideReader(p, level=5)
    nompp = _svs(tmp_path / "n.svs", IMG, mpp=None)
    with pytest.raises(SlideReadError, match="no microns-per-pixel metadata: pass --mpp"):
        OpenSlideReader(nompp, target_mpp=0.5)
    assert OpenSlideReader(nompp, target_mpp=0.5, mpp=0.25).level == 1
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"hello")
    with pytest.raises(SlideReadError, match="expected a slide OpenSlide can read"):
        OpenSlideReader(junk)
    cut = tmp_path / "cut.svs"
    cut.write_bytes(p.read_bytes()[:4000])
    with pytest.raises(SlideReadError), OpenSlideReader(cut) as r:
        r.read(0, 0, 600, 800)
    with pytest.raises(SlideReadError, match="missing path"):
        OpenSlideReader(tmp_path / "nope.svs")


def test_tissue_mask_finds_stained_areas():
    thumb = np.full((200, 300, 3), 240, np.uint8)
    thumb[50:150, 40:120] = (180, 80, 160)  # H&E-ish purple
    m = tissue_mask(thumb)
    assert m[100, 80] and not m[10, 280] and m.dtype == bool
    assert not tissue_mask(np.full((50, 50, 3), 250, np.uint8)).any()  # blank glass
    with pytest.raises(ValueError, match="uint8 RGB thumbnail"):
        tissue_mask(np.zeros((5, 5)))


def test_hvx_slide_keeps_the_documented_names():
    import hvx.io.slides
    import hvx.slide

    assert hvx.slide.__all__ == hvx.io.slides.__all__
    for name in hvx.slide.__all__:
        assert getattr(hvx.slide, name) is getattr(hvx.io.slides, name)
