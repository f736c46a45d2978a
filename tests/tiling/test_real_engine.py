"""Tiled vs one-pass inference with the real engine on a 4,096 x 4,096 mosaic of real tiles.

Needs ``hvx.Engine`` and a model bundle (``HVX_TEST_BUNDLE``, e.g. one written
by ``hvx-train``); one-pass inference of the whole mosaic needs the memory for
the network's activations at 4,096 x 4,096 (a fast variant, or a GPU).
"""

import os
from pathlib import Path

import numpy as np
import pytest
from synth import mosaic

pytestmark = pytest.mark.slow


@pytest.fixture
def engine():
    hvx = pytest.importorskip("hvx")
    if not hasattr(hvx, "Engine"):
        pytest.skip("hvx.Engine (engine branch) not merged yet")
    bundle = os.environ.get("HVX_TEST_BUNDLE")
    if not bundle or not Path(bundle).exists():
        pytest.skip("set HVX_TEST_BUNDLE to a model bundle folder")
    return hvx.Engine.load(bundle)


def test_tiled_matches_one_pass_on_a_real_mosaic(engine, consep_dir):
    from hvx.metrics import pq_stats
    from hvx.tiling import infer_image

    size = int(os.environ.get("HVX_TEST_MOSAIC", "4096"))
    image, _, _ = mosaic(consep_dir, size // 256, size // 256, seed=0)
    tiled = infer_image(engine, image, tile=256, overlap=64)
    whole = engine.infer(image[None])
    one = whole.inst[0]
    stats = pq_stats(one, tiled.inst)
    n_one = len(np.unique(one)) - 1
    print(
        f"\nmosaic {size}: one-pass {n_one} nuclei, tiled {len(tiled.nuclei)}; "
        f"PQ tiled vs one-pass {stats.pq:.4f} (DQ {stats.dq:.4f}, SQ {stats.sq:.4f}); "
        f"stitch {tiled.stats.to_dict()}"
    )
    assert abs(len(tiled.nuclei) - n_one) <= 0.02 * n_one
    assert stats.pq > 0.9
