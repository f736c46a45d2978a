"""The wheel must contain every package folder (package_dir maps engine/ -> hvx)."""

import tomllib
from pathlib import Path

import hvx

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> set[str]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(cfg["packages"])


def _on_disk() -> set[str]:
    found = set()
    for top, name in (("engine", "hvx"), ("training", "hvx.training")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *rel)))
    return found


def test_every_package_folder_is_declared():
    assert _on_disk() == _declared()


def test_version_is_single_sourced():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" in cfg["dynamic"]
    assert hvx.__version__.count(".") == 2
