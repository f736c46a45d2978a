"""hvx import-hovernet: published checkpoint layouts -> bundles -> Engine (no reference code)."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from hovernet_helpers import official_state, write_official_tar, write_tiatoolbox_pth

from hvx.bundle import import_hovernet, load_bundle
from hvx.cli import main
from hvx.model.hovernet_checkpoint import CheckpointError, read_hovernet_checkpoint


@pytest.fixture(scope="module")
def fast_tar(tmp_path_factory):
    return write_official_tar(tmp_path_factory.mktemp("ck") / "fast.tar", official_state("fast", 6))


@pytest.mark.slow
def test_official_tar_imports_to_an_identical_bundle(fast_tar, tmp_path):
    names = ["neo", "inf", "con", "dead", "epi"]
    out = import_hovernet(fast_tar, tmp_path / "b", mode="fast", types=names, licence="L")
    b = load_bundle(out)
    assert (b.variant, b.in_chans, b.num_types, b.class_names) == (
        "hovernet_fast",
        3,
        6,
        tuple(names),
    )
    assert b.preprocess.mode == "rgb" and b.preprocess.in_chans == 3 and b.mpp == 0.25
    assert b.provenance["licence"] == "L" and "Graham" in b.provenance["citation"]
    assert b.provenance["checkpoint_layout"] == "official .tar {'desc': ...}, module. prefix"
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["architecture"]["mode"] == "fast" and manifest["architecture"]["window"] == 256
    model = b.build_model()
    for k, v in official_state("fast", 6).items():
        assert torch.equal(model.state_dict()[k], v), k


@pytest.mark.slow
def test_tiatoolbox_pth_without_types_imports(tmp_path):
    ck = write_tiatoolbox_pth(tmp_path / "kumar.pth", official_state("original", None))
    b = load_bundle(import_hovernet(ck, tmp_path / "b", mode="original"))
    assert (b.variant, b.num_types, b.class_names) == ("hovernet_original_notype", 2, ("nucleus",))
    assert b.provenance["checkpoint_layout"] == "pth"


@pytest.mark.slow
def test_engine_heads_equal_a_manual_tile_mode_assembly(fast_tar, tmp_path):
    """Engine.heads = reflect pad 46, 256-windows every 164, outputs side by side, cropped."""
    from hvx import Engine

    out = import_hovernet(fast_tar, tmp_path / "b", mode="fast", types=6)
    engine = Engine.load(out, backend="torch", device="cpu")
    assert engine.valid_window == (256, 164)
    img = np.random.default_rng(3).integers(0, 256, (170, 150, 3), dtype=np.uint8)
    heads = engine.heads(img)[0].numpy()
    assert heads.np_prob.shape == (1, 170, 150) and heads.tp_prob.shape == (1, 6, 170, 150)
    model = engine.runner.module.model
    pad = np.pad(img, ((46, 46 + 328 - 170), (46, 46 + 328 - 150), (0, 0)), mode="reflect")
    want = np.zeros((328, 328), np.float32)
    for y in (0, 164):
        for x in (0, 164):
            win = torch.from_numpy(pad[y : y + 256, x : x + 256]).permute(2, 0, 1)[None] / 255.0
            with torch.no_grad():
                logits = model(win.float())["np"]
            want[y : y + 164, x : x + 164] = torch.softmax(logits, 1)[0, 1].numpy()
    np.testing.assert_allclose(heads.np_prob[0], want[:170, :150], atol=1e-5)
    res = engine.infer(img)
    assert res.inst.shape == (1, 170, 150)


def test_refuses_a_pickle_with_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"desc": Evil()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="refused: the pickle holds code"):
        read_hovernet_checkpoint(path, "fast")


def test_refuses_truncated_and_missing_files(fast_tar, tmp_path):
    cut = tmp_path / "cut.tar"
    cut.write_bytes(fast_tar.read_bytes()[: 1 << 20])
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        read_hovernet_checkpoint(cut, "fast")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_hovernet_checkpoint(tmp_path / "nope.tar", "fast")


def test_refuses_wrong_keys_shapes_and_mode(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, other)
    with pytest.raises(
        CheckpointError,
        match=r"HoVer-Net fast state dict: missing 631 keys .* unexpected 1 \['encoder.weight",
    ):
        read_hovernet_checkpoint(other, "fast")
    state = dict(official_state("fast", 6))
    state["conv_bot.weight"] = torch.zeros(1024, 2048, 3, 3)
    bad = write_tiatoolbox_pth(tmp_path / "shape.pth", state)
    with pytest.raises(CheckpointError, match=r"shape mismatch for conv_bot\.weight"):
        read_hovernet_checkpoint(bad, "fast")
    fast = write_tiatoolbox_pth(tmp_path / "fast.pth", official_state("fast", 6))
    with pytest.raises(CheckpointError, match="use --mode fast"):
        read_hovernet_checkpoint(fast, "original")
    nested = tmp_path / "list.pth"
    torch.save([1, 2], nested)
    with pytest.raises(CheckpointError, match="expected a state dict"):
        read_hovernet_checkpoint(nested, "fast")


def test_type_names_must_fit_the_checkpoint(fast_tar, tmp_path):
    with pytest.raises(CheckpointError, match="expected 5 type names"):
        import_hovernet(fast_tar, tmp_path / "b", mode="fast", types=["a", "b"])
    with pytest.raises(CheckpointError, match="--types 5 but the checkpoint's type branch has 6"):
        import_hovernet(fast_tar, tmp_path / "b", mode="fast", types=5)
    assert not (tmp_path / "b").exists()


def test_cli_one_error_line_and_exit_2(tmp_path, capsys, caplog):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a checkpoint")
    rc = main(["import-hovernet", str(bad), "--mode", "fast", "--out", str(tmp_path / "o")])
    assert rc == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "unreadable checkpoint" in errors[0] and "\n" not in errors[0]
    assert not (tmp_path / "o").exists()
