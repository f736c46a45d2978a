"""Engine.load(mpp=...): inputs at another resolution are rescaled in and out."""

import cv2
import numpy as np
import pytest
from test_engine import make_tiny_bundle

import hvx

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")  # mpp 0.5


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
    return np.stack([cv2.resize(b, (70, 64), interpolation=cv2.INTER_CUBIC) for b in base])


def test_same_mpp_means_no_rescale(bundle):
    engine = hvx.Engine.load(bundle, backend="torch", mpp=0.5)
    assert engine.scale is None
    assert hvx.Engine.load(bundle, backend="torch").scale is None


@pytest.mark.parametrize("mpp", [0, -1.0, float("nan"), "0.5"])
def test_bad_mpp_is_rejected(bundle, mpp):
    with pytest.raises(ValueError, match="expected mpp a positive number"):
        hvx.Engine.load(bundle, backend="torch", mpp=mpp)


def test_40x_input_to_20x_model_equals_manual_rescale(bundle, images):
    engine = hvx.Engine.load(bundle, backend="torch", mpp=0.25)
    assert engine.scale == pytest.approx(0.5)
    got = engine.infer(images)
    assert got.inst.shape == (2, 64, 70) and got.inst.dtype == np.int32
    assert got.type.shape == (2, 64, 70) and got.type.dtype == np.uint8
    plain = hvx.Engine.load(bundle, backend="torch")
    small = np.stack([cv2.resize(im, (35, 32), interpolation=cv2.INTER_AREA) for im in images])
    ref = plain.infer(small)
    for k in range(2):
        back = cv2.resize(ref.inst[k], (70, 64), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(got.inst[k], back)
        table = got.tables[k]
        assert set(table.id.tolist()) <= set(np.unique(back).tolist()) - {0}
        if len(table):
            assert table.bbox[:, 2].max() <= 64 and table.bbox[:, 3].max() <= 70
            areas = np.bincount(back.ravel())[table.id]
            np.testing.assert_array_equal(table.area, areas)


def test_20x_input_to_20x_model_upscaled_from_10x(bundle, images):
    engine = hvx.Engine.load(bundle, backend="torch", mpp=1.0)  # 10x input
    got = engine.infer(images[0])
    assert got.inst.shape == (1, 64, 70)
