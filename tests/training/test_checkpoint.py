"""Checkpoints: exact round trip without pickle; damaged files fail with a clear error."""

import json

import pytest
import safetensors
import safetensors.torch
import torch

from hvx.training.checkpoint import load_checkpoint, save_checkpoint


def _model_and_opt():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.99))
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.step()
    return model, opt


def test_round_trip_is_exact(tmp_path):
    model, opt = _model_and_opt()
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    path = save_checkpoint(
        tmp_path / "c.safetensors", model=model, optimizer=opt, state={"epoch": 3, "lr": [0.1]}
    )
    assert not list(tmp_path.glob(".*tmp*"))  # temp file replaced
    ck = load_checkpoint(path)
    assert ck.state == {"epoch": 3, "lr": [0.1]}
    for k, v in model.state_dict().items():
        assert torch.equal(ck.model[k], v)
    assert torch.equal(ck.rng["torch_cpu"], rng)
    _, opt2 = _model_and_opt()
    opt2.load_state_dict(ck.optimizer)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"][0]["betas"] == tuple(b["param_groups"][0]["betas"])
    for idx, st in a["state"].items():
        for key, value in st.items():
            assert torch.equal(b["state"][idx][key], value), key


def test_weights_only_checkpoint(tmp_path):
    model, _ = _model_and_opt()
    ck = load_checkpoint(save_checkpoint(tmp_path / "w.safetensors", model=model, state={}))
    assert ck.optimizer is None


def test_truncated_file_is_a_clear_error(tmp_path):
    model, opt = _model_and_opt()
    path = save_checkpoint(tmp_path / "c.safetensors", model=model, optimizer=opt, state={})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"is truncated or corrupted"):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"is truncated or corrupted"):
        load_checkpoint(path)


def test_flipped_byte_in_tensor_data_is_caught(tmp_path):
    model, opt = _model_and_opt()
    path = save_checkpoint(tmp_path / "c.safetensors", model=model, optimizer=opt, state={})
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the last tensor's bytes, header intact
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"do not match their sha256"):
        load_checkpoint(path)


def test_foreign_safetensors_file_is_rejected(tmp_path):
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file({"a": torch.zeros(2)}, str(path), metadata={"x": json.dumps(1)})
    with pytest.raises(ValueError, match=r"expected hvx checkpoint format 1, got None"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
