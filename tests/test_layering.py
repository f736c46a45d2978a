"""Who may import whom inside hvx (docs/architecture.md, "Layers"), checked on the source.

Every ``import`` of an hvx module is read from the syntax tree, at module level and
inside functions alike (``if TYPE_CHECKING:`` blocks excepted: they never run). A
rule names a layer and the layers it must not reach; an exception names one module
and why it may.
"""

import ast
import functools
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("").parts
    parts = ["hvx", *rel[1:]] if rel[0] == "engine" else ["hvx", "training", *rel[1:]]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    return skip


def _imports(path: Path) -> set[str]:
    """The hvx modules ``path`` imports (``from hvx import x`` gives ``hvx.x``)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            found |= {f"{base}.{a.name}" for a in node.names} | {base}
    return {m for m in found if m == "hvx" or m.startswith("hvx.")}


@functools.cache
def _graph() -> dict[str, set[str]]:
    files = [*(ROOT / "engine").rglob("*.py"), *(ROOT / "training").rglob("*.py")]
    graph = {_module_name(f): _imports(f) for f in files}
    assert {"hvx.engine", "hvx.io", "hvx.training.trainer"} <= set(graph), "sources not found"
    return graph


def _in(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


#: (layer, layers it must not import, modules excepted with the reason).
RULES = [
    ("hvx", ["hvx.training"], {}),  # the runtime never depends on training
    (
        "hvx.preprocess",
        ["hvx.postprocess", "hvx.metrics", "hvx.model", "hvx.backends", "hvx.engine"],
        {},
    ),
    ("hvx.postprocess", ["hvx.preprocess", "hvx.metrics", "hvx.model", "hvx.engine"], {}),
    ("hvx.metrics", ["hvx.preprocess", "hvx.postprocess", "hvx.model", "hvx.engine"], {}),
    (
        "hvx.model",
        ["hvx.preprocess", "hvx.postprocess", "hvx.metrics", "hvx.engine", "hvx.tiling"],
        {"hvx.model.hovernet_checkpoint": "converts a checkpoint into a bundle (configs)"},
    ),
    (
        "hvx.io",
        ["hvx.engine", "hvx.tiling", "hvx.model", "hvx.backends", "hvx.distributed"],
        {},
    ),
    ("hvx.tiling", ["hvx.engine", "hvx.backends", "hvx.model", "hvx.cli"], {}),
    ("hvx.stain", ["hvx.engine", "hvx.tiling", "hvx.model", "hvx.backends", "hvx.cli"], {}),
]

#: Layers only the layers listed may import (besides themselves).
ONLY_FROM = {
    "hvx.bench": [],
    "hvx.cli": [],
    "hvx.distributed": ["hvx.cli"],
}


def _of_layer(module: str, layer: str) -> bool:
    """Whether ``module`` belongs to ``layer``; the runtime ``hvx`` excludes ``hvx.training``."""
    return _in(module, layer) and (_in(layer, "hvx.training") or not _in(module, "hvx.training"))


def _violations(graph, layer, forbidden, excepted):
    return sorted(
        f"{mod} imports {dep}"
        for mod in graph
        if _of_layer(mod, layer) and mod not in excepted
        for dep in graph[mod]
        if any(_in(dep, f) for f in forbidden) and not _of_layer(dep, layer)
    )


@pytest.mark.parametrize(("layer", "forbidden", "excepted"), RULES, ids=[r[0] for r in RULES])
def test_layer_does_not_import_above_itself(layer, forbidden, excepted):
    bad = _violations(_graph(), layer, forbidden, excepted)
    assert not bad, f"{layer}: expected no imports of {forbidden}, got {bad}"


@pytest.mark.parametrize(("layer", "allowed"), ONLY_FROM.items())
def test_top_layers_are_imported_only_from_above(layer, allowed):
    bad = sorted(
        f"{mod} imports {dep}"
        for mod, deps in _graph().items()
        if not _in(mod, layer) and not any(_in(mod, a) for a in allowed)
        for dep in deps
        if _in(dep, layer)
    )
    assert not bad, f"{layer}: expected imports only from {allowed or 'itself'}, got {bad}"


def test_the_checker_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "engine" / "io"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from hvx.engine import Engine\n"
        "def f():\n    from hvx.tiling import plan\n"
        "from . import rows\nfrom ..results import NucleusTable\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _imports(pkg / "x.py") == {
        "hvx.tiling",
        "hvx.tiling.plan",
        "hvx.io",
        "hvx.io.rows",
        "hvx.results",
        "hvx.results.NucleusTable",
    }


def test_a_forbidden_edge_is_reported():
    graph = {
        "hvx.engine": {"hvx.training.trainer", "hvx.backends.base"},
        "hvx.training.trainer": {"hvx.engine"},
        "hvx.io.rows": {"hvx.tiling.plan", "hvx.io.atomic"},
    }
    assert _violations(graph, "hvx", ["hvx.training"], {}) == [
        "hvx.engine imports hvx.training.trainer"
    ]
    io_bad = _violations(graph, "hvx.io", ["hvx.tiling"], {})
    assert io_bad == ["hvx.io.rows imports hvx.tiling.plan"]
    assert _violations(graph, "hvx.io", ["hvx.tiling"], {"hvx.io.rows": "why"}) == []
