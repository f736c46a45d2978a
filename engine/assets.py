"""Files shipped inside the package: the default model bundle and sample tiles.

- ``models/default/``: the default model bundle (see docs/model-card.md).
- ``samples/*.png``: four 256x256 H&E tiles from the CoNSeP train images
  (40x, ~0.25 um/px; Apache-2.0; Graham et al., Medical Image Analysis 58 (2019)
  101563), taken from the source images held out for validation, so the default
  model never saw them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_MODEL_DIR", "SAMPLES_DIR", "default_model_path", "sample_paths"]

_HERE = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = _HERE / "models" / "default"
SAMPLES_DIR = _HERE / "samples"


def default_model_path() -> Path:
    """The bundled default model bundle folder.

    Raises:
        FileNotFoundError: If this installation ships without it.
    """
    if not (DEFAULT_MODEL_DIR / "model.json").is_file():
        raise FileNotFoundError(
            f"expected the bundled default model at {DEFAULT_MODEL_DIR}, found none; "
            "reinstall hvx or pass a model bundle folder"
        )
    return DEFAULT_MODEL_DIR


def sample_paths() -> list[Path]:
    """The bundled sample tiles (PNG), sorted by name."""
    return sorted(SAMPLES_DIR.glob("*.png"))
