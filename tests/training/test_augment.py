"""Augmentation: label consistency, geometry alignment, determinism, dtypes (SPEC §5, §7e)."""

import dataclasses

import cv2
import numpy as np
import pytest

from hvx.training.augment import AugmentConfig, Augmenter, affine_matrix

GEOMETRY_ONLY = AugmentConfig(blur_noise=False, colour=False)
FIXED = dict(scale=(1.0, 1.0), translate=(0.0, 0.0), shear=(0.0, 0.0), rotate=(0.0, 0.0))


def _tile(seed=0, shape=(64, 80)):
    """Random image and discs; the class of each instance is id % 4 + 1."""
    rng = np.random.default_rng(seed)
    h, w = shape
    inst = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[:h, :w]
    for k in range(1, 30):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(2, 8)
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    cls = np.where(inst > 0, inst % 4 + 1, 0).astype(np.uint8)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return image, inst, cls


def _encode(inst, cls):
    """An image that carries its own labels: R = id, G = 40 * class, B = 255 (255 = inside)."""
    image = np.empty((*inst.shape, 3), np.uint8)
    image[..., 0] = inst % 256
    image[..., 1] = cls * 40
    image[..., 2] = 255
    return image


def test_defaults_are_the_papers():
    c = AugmentConfig()
    assert c.affine and c.blur_noise and c.colour
    assert c.scale == (0.8, 1.2) and c.translate == (-0.01, 0.01)
    assert c.shear == (-5.0, 5.0) and c.rotate == (-179.0, 179.0)
    assert c.flip_lr == 0.5 and c.flip_ud == 0.5
    assert c.blur_ksizes == (1, 3, 5) and c.noise_scale == (0.0, 0.05 * 255)
    assert c.noise_per_channel == 0.5
    assert c.hue == (-8.0, 8.0) and c.saturation == (-0.2, 0.2)
    assert c.brightness == (-26.0, 26.0) and c.contrast == (0.75, 1.25)


def test_config_dict_round_trip_and_errors():
    c = AugmentConfig(affine=False, rotate=(-90, 90), blur_ksizes=(1, 3))
    d = c.to_dict()
    assert d["rotate"] == [-90.0, 90.0]
    assert AugmentConfig.from_dict(d) == c
    assert AugmentConfig.from_dict({"affine": False}) == AugmentConfig(affine=False)
    with pytest.raises(ValueError, match=r"unknown key 'rotation'; expected one of affine, "):
        AugmentConfig.from_dict({"rotation": (0, 1)})
    with pytest.raises(ValueError, match=r"scale: expected a \(low, high\) pair"):
        AugmentConfig(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="scale: expected positive factors"):
        AugmentConfig(scale=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"flip_lr: expected a probability in \[0, 1\], got 2"):
        AugmentConfig(flip_lr=2)
    with pytest.raises(ValueError, match="blur_ksizes: expected odd positive ints"):
        AugmentConfig(blur_ksizes=(1, 4))
    with pytest.raises(TypeError, match="affine: expected a bool"):
        AugmentConfig(affine=1)
    with pytest.raises(ValueError, match=r"shear: expected angles in \(-90, 90\)"):
        AugmentConfig(shear=(-90, 5))
    with pytest.raises(ValueError, match=r"hue: expected a \(low, high\) pair of finite numbers"):
        AugmentConfig(hue=(0, float("nan")))


def test_none_config_is_identity_and_copies():
    image, inst, cls = _tile()
    out = Augmenter(AugmentConfig.none())(image, inst, cls, np.random.default_rng(0))
    for a, b in zip(out, (image, inst, cls), strict=True):
        np.testing.assert_array_equal(a, b)
        assert a is not b and not np.shares_memory(a, b)


@pytest.mark.parametrize("seed", range(12))
def test_label_consistency_and_alignment(seed):
    _, inst, cls = _tile(seed)
    image = _encode(inst, cls)
    out_img, out_inst, out_cls = Augmenter(GEOMETRY_ONLY)(
        image, inst, cls, np.random.default_rng(seed)
    )
    # image and labels went through the same geometry, pixel for pixel
    np.testing.assert_array_equal(out_img[..., 0], out_inst % 256)
    np.testing.assert_array_equal(out_img[..., 1], out_cls * 40)
    outside = out_img[..., 2] == 0  # the constant border
    assert not out_inst[outside].any() and not out_cls[outside].any()
    # every instance keeps its one class; background stays class 0
    for k in np.unique(out_inst)[1:]:
        np.testing.assert_array_equal(np.unique(out_cls[out_inst == k]), [k % 4 + 1])
    assert not out_cls[out_inst == 0].any()
    assert set(np.unique(out_inst)) <= set(np.unique(inst))


def test_label_consistency_with_every_augmentation_on_real_tiles(consep_dir):
    with np.load(consep_dir / "labels.npz") as labels:
        all_inst, all_cls = labels["inst"][::48], labels["cls"][::48]  # decompress once
    aug = Augmenter()
    rng = np.random.default_rng(0)
    for inst, cls in zip(all_inst, all_cls, strict=True):
        out_img, out_inst, out_cls = aug(_encode(inst, cls), inst, cls, rng)
        assert out_img.shape == (256, 256, 3) and out_img.dtype == np.uint8
        pairs = np.unique(np.stack([out_inst.ravel(), out_cls.ravel()]), axis=1)
        for inst_id, c in pairs.T:
            if inst_id:
                assert c == cls[inst == inst_id][0]
        assert not out_cls[out_inst == 0].any()


def test_deterministic_given_the_rng():
    image, inst, cls = _tile(3)
    aug = Augmenter()
    a = aug(image, inst, cls, np.random.default_rng(42))
    b = aug(image, inst, cls, np.random.default_rng(42))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    c = aug(image, inst, cls, np.random.default_rng(43))
    assert not np.array_equal(a[0], c[0])


def test_inputs_not_modified():
    image, inst, cls = _tile(4)
    copies = [x.copy() for x in (image, inst, cls)]
    for seed in range(5):
        Augmenter()(image, inst, cls, np.random.default_rng(seed))
    for x, y in zip((image, inst, cls), copies, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    ("inst_dtype", "cls_dtype"),
    [(np.int32, np.uint8), (np.uint16, np.int64), (np.int64, np.int32), (np.uint32, np.uint16)],
)
@pytest.mark.parametrize("shape", [(64, 80), (33, 17)])
def test_dtypes_and_shapes_are_kept(inst_dtype, cls_dtype, shape):
    image, inst, cls = _tile(5, shape)
    out = Augmenter()(
        image, inst.astype(inst_dtype), cls.astype(cls_dtype), np.random.default_rng(1)
    )
    assert [x.dtype for x in out] == [np.uint8, np.dtype(inst_dtype), np.dtype(cls_dtype)]
    assert [x.shape for x in out] == [(*shape, 3), shape, shape]
    assert all(x.flags.c_contiguous for x in out)


def test_flips():
    image, inst, cls = _tile(6)
    cfg = dataclasses.replace(AugmentConfig.none(), flip_lr=1.0)
    out = Augmenter(cfg)(image, inst, cls, np.random.default_rng(0))
    for a, b in zip(out, (image, inst, cls), strict=True):
        np.testing.assert_array_equal(a, b[:, ::-1])
    cfg = dataclasses.replace(AugmentConfig.none(), flip_lr=1.0, flip_ud=1.0)
    out = Augmenter(cfg)(image, inst, cls, np.random.default_rng(0))
    np.testing.assert_array_equal(out[1], inst[::-1, ::-1])


@pytest.mark.parametrize("size", [8, 9, 64])
def test_affine_identity_and_quarter_turn(size):
    image, inst, cls = _tile(7, (size, size))
    base = dataclasses.replace(GEOMETRY_ONLY, flip_lr=0.0, flip_ud=0.0, **FIXED)
    out = Augmenter(base)(image, inst, cls, np.random.default_rng(0))
    np.testing.assert_array_equal(out[0], image)
    np.testing.assert_array_equal(out[1], inst)
    turn = dataclasses.replace(base, rotate=(90.0, 90.0))
    out = Augmenter(turn)(image, inst, cls, np.random.default_rng(0))
    np.testing.assert_array_equal(out[0], np.rot90(image))  # positive = counter-clockwise
    np.testing.assert_array_equal(out[1], np.rot90(inst))
    np.testing.assert_array_equal(out[2], np.rot90(cls))


def test_affine_matrix_composition():
    m = affine_matrix((11, 21), scale=(2.0, 0.5), translate=(0.1, 0.0))
    centre = np.array([10.0, 5.0, 1.0])
    np.testing.assert_allclose(m @ centre, [10.0 + 2.1, 5.0])  # centre moves by the shift only
    np.testing.assert_allclose(m @ np.array([11.0, 5.0, 1.0]), [12.0 + 2.1, 5.0])  # x scaled 2
    sh = affine_matrix((11, 11), shear=45.0)
    np.testing.assert_allclose(sh @ np.array([5.0, 6.0, 1.0]), [6.0, 6.0])  # x += tan * dy


def test_affine_draws_cover_the_ranges():
    image, inst, cls = _tile(8, (64, 64))
    aug = Augmenter(dataclasses.replace(GEOMETRY_ONLY, flip_lr=0.0, flip_ud=0.0))
    changed = 0
    for seed in range(10):
        out = aug(image, inst, cls, np.random.default_rng(seed))
        changed += not np.array_equal(out[1], inst)
        assert (out[1] == 0).sum() >= (inst == 0).sum() * 0.5
    assert changed == 10


def test_image_only_ops_leave_labels_alone():
    image, inst, cls = _tile(9)
    cfg = dataclasses.replace(AugmentConfig(), affine=False, flip_lr=0.0, flip_ud=0.0)
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(10):
        out = Augmenter(cfg)(image, inst, cls, rng)
        np.testing.assert_array_equal(out[1], inst)
        np.testing.assert_array_equal(out[2], cls)
        changed += not np.array_equal(out[0], image)
    assert changed >= 9


def test_contrast_is_applied_not_the_reference_bug():
    image, inst, cls = _tile(10)
    cfg = dataclasses.replace(
        AugmentConfig.none(),
        colour=True,
        hue=(0.0, 0.0),
        saturation=(0.0, 0.0),
        brightness=(0.0, 0.0),
        contrast=(0.5, 0.5),
    )
    out = Augmenter(cfg)(image, inst, cls, np.random.default_rng(0))[0]
    mean = image.mean(axis=(0, 1)).astype(np.float32)
    expected = np.clip(image * np.float32(0.5) + mean * np.float32(0.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert not np.array_equal(out, image)


def test_colour_ops_formulas():
    image, inst, cls = _tile(11)
    none = AugmentConfig.none()

    def only(**ranges):
        zero = dict(
            hue=(0.0, 0.0), saturation=(0.0, 0.0), brightness=(0.0, 0.0), contrast=(1.0, 1.0)
        )
        cfg = dataclasses.replace(none, colour=True, **{**zero, **ranges})
        return Augmenter(cfg)(image, inst, cls, np.random.default_rng(0))[0]

    np.testing.assert_array_equal(only(), image)  # all four at their neutral values
    out = only(brightness=(-30.0, -30.0))
    np.testing.assert_array_equal(out, np.clip(image.astype(np.int16) - 30, 0, 255))
    out = only(saturation=(-1.0, -1.0))  # a = 0: grey
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))
    out = only(hue=(4.5, 4.5))
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = np.minimum((hsv[..., 0] + 4.5) % 180, 179).astype(np.uint8)
    np.testing.assert_array_equal(out, cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))


def test_blur_and_noise_branches():
    image, inst, cls = _tile(12)
    cfg = dataclasses.replace(AugmentConfig.none(), blur_noise=True)
    aug = Augmenter(cfg)
    outputs = set()
    for seed in range(30):
        rng = np.random.default_rng(seed)
        draws = np.random.default_rng(seed)
        draws.random(2)  # the two flip draws come first (affine off: no affine draws)
        choice = int(draws.integers(3))
        out = aug(image, inst, cls, rng)[0]
        assert out.dtype == np.uint8 and out.shape == image.shape
        if choice == 2:  # noise: small changes around the image
            assert np.abs(out.astype(int) - image).mean() < 0.05 * 255
        outputs.add(out.tobytes())
    assert len(outputs) > 10
    blur = dataclasses.replace(cfg, blur_ksizes=(1,))  # kernel 1 = no blur; noise still on
    changed = sum(
        not np.array_equal(Augmenter(blur)(image, inst, cls, np.random.default_rng(s))[0], image)
        for s in range(12)
    )
    assert 0 < changed < 12


def test_input_errors():
    image, inst, cls = _tile()
    aug = Augmenter()
    rng = np.random.default_rng(0)
    with pytest.raises(
        TypeError, match=r"rng: expected a numpy\.random\.Generator, got RandomState"
    ):
        aug(image, inst, cls, np.random.RandomState(0))
    with pytest.raises(TypeError, match="image: expected dtype uint8, got float32"):
        aug(image.astype(np.float32), inst, cls, rng)
    with pytest.raises(ValueError, match=r"image: expected ndarray\[H, W, 3\], got \(64, 80, 4\)"):
        aug(np.zeros((64, 80, 4), np.uint8), inst, cls, rng)
    with pytest.raises(ValueError, match=r"inst: expected shape \(64, 80\) like the image"):
        aug(image, inst[:10], cls, rng)
    with pytest.raises(TypeError, match="cls: expected an integer dtype, got float64"):
        aug(image, inst, cls.astype(float), rng)
    with pytest.raises(TypeError, match="config: expected an AugmentConfig, got dict"):
        Augmenter({})


# ---- stain and scanner variation --------------------------------------------------------


def test_hed_conversions_match_scikit_image():
    color = pytest.importorskip("skimage.color", reason="scikit-image is in the test extra")
    from hvx.training.augment import hed_to_rgb, rgb_to_hed

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 41, 3), dtype=np.uint8)
    img[0, :3] = [[0, 0, 0], [255, 255, 255], [0, 255, 7]]  # log(0) handling, white
    np.testing.assert_allclose(rgb_to_hed(img), color.rgb2hed(img), rtol=0, atol=1e-12)
    hed = color.rgb2hed(img) * rng.uniform(0.5, 1.5, 3) + rng.uniform(-0.05, 0.05, 3)
    np.testing.assert_allclose(hed_to_rgb(hed), color.hed2rgb(hed), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"expected uint8 \[..., 3\]"):
        rgb_to_hed(img.astype(np.float32))
    with pytest.raises(ValueError, match=r"hed: expected \[..., 3\]"):
        hed_to_rgb(np.zeros((4, 2)))


def test_hed_jitter_identity_and_direction():
    from hvx.training.augment import hed_jitter

    image, _, _ = _tile(3)
    same = hed_jitter(image, np.ones(3), np.zeros(3))
    # unclamped densities: the identity jitter gives the image back (black stays black:
    # it is clipped at 1e-6 before the log, as in scikit-image)
    assert np.abs(same.astype(int) - image).max() <= 1
    # more haematoxylin: darker red channel (H absorbs red most)
    h_up = hed_jitter(image, np.array([1.5, 1.0, 1.0]), np.zeros(3))
    assert h_up[..., 0].mean() < same[..., 0].mean()


def test_jpeg_and_hed_in_the_augmenter_are_deterministic_and_image_only():
    cfg = AugmentConfig(
        affine=False,
        flip_lr=0,
        flip_ud=0,
        blur_noise=False,
        colour=False,
        hed=True,
        jpeg=True,
        jpeg_p=1.0,
        jpeg_quality=(20, 20),
    )
    image, inst, cls = _tile(4)
    a = Augmenter(cfg)(image, inst, cls, np.random.default_rng(7))
    b = Augmenter(cfg)(image, inst, cls, np.random.default_rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert np.array_equal(a[1], inst) and np.array_equal(a[2], cls)
    assert a[0].dtype == np.uint8 and a[0].shape == image.shape
    assert np.abs(a[0].astype(int) - image).mean() > 5  # quality 20 on noise: visible


def test_jpeg_roundtrip_quality():
    from hvx.training.augment import jpeg_roundtrip

    image, _, _ = _tile(5)
    smooth = cv2.GaussianBlur(image, (9, 9), 3)
    hi = np.abs(jpeg_roundtrip(smooth, 95).astype(int) - smooth).mean()
    lo = np.abs(jpeg_roundtrip(smooth, 10).astype(int) - smooth).mean()
    assert hi < lo


def test_isotropic_scale_draws_one_factor(monkeypatch):
    import hvx.training.augment as aug

    seen = []
    real = aug.affine_matrix

    def spy(shape, **kw):
        seen.append(kw["scale"])
        return real(shape, **kw)

    monkeypatch.setattr(aug, "affine_matrix", spy)
    image, inst, cls = _tile(6)
    for s in range(5):
        Augmenter(AugmentConfig(scale_isotropic=True, scale=(0.7, 1.4)))(
            image, inst, cls, np.random.default_rng(s)
        )
        Augmenter(AugmentConfig(scale=(0.7, 1.4)))(image, inst, cls, np.random.default_rng(s))
    iso, aniso = seen[0::2], seen[1::2]
    assert all(sx == sy and 0.7 <= sx <= 1.4 for sx, sy in iso)
    assert any(sx != sy for sx, sy in aniso)


def test_stain_options_validation():
    with pytest.raises(ValueError, match="jpeg_quality"):
        AugmentConfig(jpeg_quality=(0, 50))
    with pytest.raises(ValueError, match="jpeg_p"):
        AugmentConfig(jpeg_p=1.5)
    with pytest.raises(ValueError, match="hed_scale"):
        AugmentConfig(hed_scale=(-1.0, 1.0))
    d = AugmentConfig(hed=True, jpeg=True).to_dict()
    assert AugmentConfig.from_dict(d) == AugmentConfig(hed=True, jpeg=True)
