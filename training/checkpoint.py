"""Training checkpoints without pickle: one safetensors file, written atomically.

Layout of a checkpoint file (``*.safetensors``):

- tensors ``model/<state_dict key>``: the model's parameters and buffers;
- tensors ``optim/<param index>/<state key>`` (AdamW ``exp_avg``, ``exp_avg_sq``,
  ``step``): the optimiser's per-parameter state, when saved;
- tensors ``rng/torch_cpu`` (and ``rng/torch_cuda``): the torch RNG states;
- metadata ``hvx_checkpoint`` = format version, ``state`` = JSON of everything
  else (epoch/step counters, optimiser param groups and non-tensor state,
  scheduler and GradScaler state, history, the resolved config), and
  ``sha256`` = a digest of every tensor's bytes in key order.

Loading checks the header (safetensors), the format version, the digest and
the JSON, so a truncated or corrupted file raises ``ValueError`` naming the file
and what is wrong, never a crash deep inside torch or a silent fallback.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch

from hvx.io.atomic import atomic_path, atomic_write

__all__ = [
    "CHECKPOINT_VERSION",
    "Checkpoint",
    "check_resume_data",
    "data_identity",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_VERSION = "1"


class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: The file.
        model: The model state dict (CPU tensors).
        optimizer: The optimiser state dict (``torch.optim.Optimizer.load_state_dict``
            format) or None when the checkpoint holds weights only.
        rng: ``{"torch_cpu": Tensor uint8, "torch_cuda": Tensor uint8}`` (present keys only).
        state: Everything else (JSON).
    """

    def __init__(self, path: Path, model: dict, optimizer: dict | None, rng: dict, state: dict):
        self.path = path
        self.model = model
        self.optimizer = optimizer
        self.rng = rng
        self.state = state


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().contiguous().cpu()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(np.ascontiguousarray(t.reshape(-1).view(torch.uint8).numpy()).data)
    return h.hexdigest()


def _split_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in opt_state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{idx}/{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
) -> Path:
    """Writes a checkpoint atomically and durably (:func:`hvx.io.atomic.atomic_path`).

    Args:
        path: Destination ``.safetensors`` file.
        model: The model (its ``state_dict``).
        state: JSON-ready training state (counters, scheduler, history, config).
        optimizer: The base optimiser; None writes weights only (the "best" file).

    Returns:
        The path written.
    """
    path = Path(path)
    tensors = {
        f"model/{k}": v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()
    }
    meta_state = dict(state)
    if optimizer is not None:
        opt_tensors, opt_json = _split_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
        meta_state["optimizer"] = opt_json
    tensors["rng/torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng/torch_cuda"] = torch.cuda.get_rng_state()
    metadata = {
        "hvx_checkpoint": CHECKPOINT_VERSION,
        "state": json.dumps(meta_state),
        "sha256": _digest(tensors),
    }
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata=metadata)
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Reads and verifies a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is truncated, corrupted, of another format version, or
            its digest does not match its tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own error types on bad headers/data
        raise ValueError(
            f"checkpoint {path} is truncated or corrupted (not a readable safetensors file: {e})"
        ) from None
    version = metadata.get("hvx_checkpoint")
    if version != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path}: expected hvx checkpoint format {CHECKPOINT_VERSION}, "
            f"got {version!r}"
        )
    if metadata.get("sha256") != _digest(tensors):
        raise ValueError(f"checkpoint {path} is corrupted: its tensors do not match their sha256")
    try:
        state = json.loads(metadata["state"])
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"checkpoint {path} is corrupted: bad state JSON ({e})") from None
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    rng = {k[4:]: v for k, v in tensors.items() if k.startswith("rng/")}
    optimizer = None
    opt_json = state.pop("optimizer", None)
    if opt_json is not None:
        per_param: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optim/"):
                _, idx, key = k.split("/", 2)
                per_param.setdefault(int(idx), {})[key] = v
        for idx, scalars in opt_json["scalars"].items():
            per_param.setdefault(int(idx), {}).update(scalars)
        optimizer = {"state": per_param, "param_groups": opt_json["param_groups"]}
    return Checkpoint(path, model, optimizer, rng, state)


# ---- data identity (what a --resume must train on) ----------------------------------------

DATA_RECORD = "data.json"
_SAMPLES, _BLOCK = 17, 1 << 16


def _file_digest(path: Path) -> str:
    """SHA-256 of a file's size and sampled 64 KiB blocks (whole when small)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= _SAMPLES * _BLOCK:
            h.update(f.read())
        else:
            for k in range(_SAMPLES):
                f.seek(k * (size - _BLOCK) // (_SAMPLES - 1))
                h.update(f.read(_BLOCK))
    return h.hexdigest()


def data_identity(path: str | os.PathLike) -> dict:
    """What identifies a dataset folder, independent of where it lives.

    The top-level files (``images.npy``, ``labels.npy``/``labels.npz``, CSVs) by
    size and sampled-block hash, and the names and sizes of the files in
    ``images/`` (CoNSeP-style folders). An edit of a label file, another dataset
    or another subset changes it; moving or copying the folder does not.

    Returns:
        ``{"digest": hex, "files": int}``.
    """
    root = Path(path)
    h = hashlib.sha256()
    n = 0
    for f in sorted(root.iterdir()):
        if f.is_file():
            h.update(f"{f.name}\0{_file_digest(f)}\n".encode())
            n += 1
    images = root / "images"
    if images.is_dir():
        for f in sorted(images.iterdir()):
            h.update(f"images/{f.name}\0{f.stat().st_size}\n".encode())
            n += 1
    return {"digest": h.hexdigest(), "files": n}


def check_resume_data(
    out: str | os.PathLike,
    data: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    force: bool,
    fresh: bool = False,
) -> str:
    """Records a run's dataset; on a resume, refuses another one unless ``force``.

    Args:
        out: The run folder (``data.json`` is kept there).
        data: The dataset folder of this invocation, or the folders of a
            multi-dataset config (``data.datasets``), identified together.
        force: Continue on different data (recorded: both datasets are named).
        fresh: A new run: start the record anew.

    Returns:
        The data source to record in the bundle's provenance (both datasets when
        a forced resume changed them).

    Raises:
        ValueError: A resume on different data without ``force``.
    """
    rec_path = Path(out) / DATA_RECORD
    folders = [data] if isinstance(data, str | os.PathLike) else list(data)
    if len(folders) == 1:
        ident = {"source": str(folders[0]), **data_identity(folders[0])}
    else:
        parts = [data_identity(f) for f in folders]
        joined = "\n".join(p["digest"] for p in parts).encode()
        ident = {
            "source": ", ".join(str(f) for f in folders),
            "digest": hashlib.sha256(joined).hexdigest(),
            "files": sum(p["files"] for p in parts),
        }
    history = []
    if rec_path.is_file() and not fresh:
        try:
            history = json.loads(rec_path.read_text())["history"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"expected a readable {rec_path}, got {e}") from e
    if history and history[-1]["digest"] != ident["digest"]:
        if not force:
            raise ValueError(
                f"cannot resume {out} on different data: it was trained on "
                f"{history[-1]['source']} (digest {history[-1]['digest'][:12]}), got {data} "
                f"(digest {ident['digest'][:12]}); pass the same --data, or --force to "
                "continue on this one (both are then recorded)"
            )
        history.append(ident)
    elif not history:
        history = [ident]
    atomic_write(rec_path, json.dumps({"history": history}, indent=2) + "\n")
    earlier = [s for s in dict.fromkeys(h["source"] for h in history) if s != str(data)]
    if not earlier:
        return str(data)
    return f"{data} (resumed with --force; earlier steps trained on {', '.join(earlier)})"
