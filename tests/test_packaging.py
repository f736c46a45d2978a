"""The wheel must contain every package folder (package_dir maps engine/ -> hvx).

The README's layout table must name every folder of the repository and of both packages.
"""

import tomllib
from fnmatch import fnmatch
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


def _layout_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Layout\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _folders() -> set[str]:
    """Top-level folders and the folders inside engine/ and training/, minus ignored ones."""
    lines = (ROOT / ".gitignore").read_text().splitlines()
    ignored = [x.strip().strip("/") for x in lines if x.strip() and not x.startswith("#")]

    def kept(d: Path) -> bool:
        hidden = d.name.startswith(".") and d.name != ".ci"  # .git, caches, local data
        return d.is_dir() and not hidden and not any(fnmatch(d.name, p) for p in ignored)

    found = {f"{d.name}/" for d in ROOT.iterdir() if kept(d)}
    for top in ("engine", "training"):
        found |= {f"{top}/{d.name}/" for d in (ROOT / top).iterdir() if kept(d)}
    return found


def test_readme_layout_names_every_folder():
    layout = _layout_section()
    folders = _folders()
    assert {"engine/", "training/", "engine/io/", "training/configs/"} <= folders
    missing = sorted(f for f in folders if f"| `{f}` |" not in layout)
    assert not missing, f"README '## Layout': expected a row for each folder, missing {missing}"
