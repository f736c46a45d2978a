"""Test-wide set-up: device markers and Triton's CPU interpreter.

Triton kernels run on the CPU under ``TRITON_INTERPRET=1`` when there is no
CUDA GPU; the variable must be set before any ``@triton.jit`` module is
imported, which is why it is set here, at collection start.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _find_consep() -> Path:
    """The shared CoNSeP folder: $HVX_CONSEP_DIR, else ``shared/data/consep`` beside
    the checkout or beside any folder above it (git worktrees live deeper)."""
    if os.environ.get("HVX_CONSEP_DIR"):
        return Path(os.environ["HVX_CONSEP_DIR"])
    for parent in Path(__file__).resolve().parents[1].parents:
        candidate = parent / "shared" / "data" / "consep"
        if candidate.is_dir():
            return candidate
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "consep"


#: Real CoNSeP tiles shipped to developers and CI (absent on users' machines).
CONSEP_DIR = _find_consep()


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return HAS_CUDA


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips ``cuda`` and ``tensorrt`` tests, with the reason, where they cannot run."""
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False")
    skip_trt = pytest.mark.skip(
        reason="needs TensorRT and a CUDA GPU: TensorRT cannot be installed on this machine"
    )
    has_trt = _has_tensorrt()
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_cuda)
        if "tensorrt" in item.keywords and not has_trt:
            item.add_marker(skip_trt)


@pytest.fixture
def consep_dir() -> Path:
    """The shared CoNSeP folder; skips the test when it is absent."""
    if not (CONSEP_DIR / "labels.npz").exists():
        pytest.skip(f"real CoNSeP tiles not found at {CONSEP_DIR} (developer/CI data only)")
    return CONSEP_DIR


@pytest.fixture(scope="module")
def one_torch_thread():
    """Runs a module's tests with one torch thread.

    Small convolutions on a shared 2-core box: two OpenMP threads per process
    oversubscribe the cores and run up to 10x slower than one.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
