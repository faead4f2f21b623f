"""The layering of napari_unet, read from its imports: no cycle in the import graph; ``core``
is pure compute (no Qt, no engine, command line or widgets); the engine and the command line
never import Qt or the widgets; no module imports another module's private name.

Every ``import``/``from ... import`` counts, also those inside functions (a lazy import is still
a dependency a reader has to follow).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import napari_unet

ROOT = Path(napari_unet.__file__).parent
REPO = ROOT.parents[1]
#: GUI toolkits: only the widgets import them
QT = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "vispy", "superqt")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "napari_unet.core.predict.tiled" in graph["napari_unet.core.predict.segment"]  # real
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def imported_names(path: Path, package: str = "") -> list[tuple[int, str, str | None]]:
    """``(line, module, name)`` of every import in ``path`` (``name`` None for ``import m``);
    relative imports resolved against ``package``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            out += [(node.lineno, base, a.name) for a in node.names]
    return out


def _layer_violations(root: Path, layer: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((root / layer).rglob("*.py")):
        package = ".".join(path.relative_to(root.parent).parent.parts)
        for line, module, name in imported_names(path, package):
            full = module if name is None else f"{module}.{name}"
            if any(full == f or full.startswith(f + ".") or module == f for f in forbidden):
                bad.append(f"{path.relative_to(root)}:{line}: {full}")
    return bad


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("core", (*QT, "napari_unet.engine", "napari_unet.commands", "napari_unet.widgets",
              "napari_unet.cli")),
    ("engine", (*QT, "napari_unet.commands", "napari_unet.widgets", "napari_unet.cli")),
    ("commands", (*QT, "napari_unet.widgets")),
])
def test_layers_import_only_what_lies_below(layer, forbidden):
    assert _layer_violations(ROOT, layer, forbidden) == []


def test_the_layer_rule_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "napari_unet" / "commands"
    pkg.mkdir(parents=True)
    (pkg / "demo.py").write_text("def gui():\n    from qtpy import QtWidgets\n"
                                 "    from ..widgets import launch_demo_viewer\n")
    found = _layer_violations(tmp_path / "napari_unet", "commands", (*QT, "napari_unet.widgets"))
    assert [f.rsplit(": ", 1)[1] for f in found] == [
        "qtpy.QtWidgets", "napari_unet.widgets.launch_demo_viewer"]


def _private_imports(path: Path, root: Path = REPO) -> list[str]:
    """``from napari_unet.x import _name`` and ``import napari_unet.x._mod`` in ``path``."""
    bad = []
    for line, module, name in imported_names(path):
        if not module.startswith("napari_unet"):
            continue
        parts = module.split(".") + ([name] if name else [])
        if any(p.startswith("_") and not p.startswith("__") for p in parts):
            bad.append(f"{path.relative_to(root)}:{line}: {'.'.join(parts)}")
    return bad


def test_no_private_name_is_imported_across_modules():
    files = [*ROOT.rglob("*.py"), *(REPO / "benchmarks").rglob("*.py"),
             *(REPO / "scripts").rglob("*.py")]
    assert [bad for f in sorted(files) for bad in _private_imports(f)] == []


def test_the_private_rule_sees_private_names_and_modules(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from napari_unet.core.model.unet import _center_crop, UNet\n"
                   "import napari_unet.widgets._old\nfrom napari_unet import __version__\n")
    assert [b.split(": ")[1] for b in _private_imports(bad, tmp_path)] == [
        "napari_unet.core.model.unet._center_crop", "napari_unet.widgets._old"]
