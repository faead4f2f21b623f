"""The house's limits, read from the source: a module is read in one sitting (at most
:data:`MODULE_LINES` lines) and a function fits a screen (at most :data:`FUNCTION_LINES` lines
of code, its docstring, comments and blank lines not counted)."""

from __future__ import annotations

import ast
from pathlib import Path

import napari_unet

ROOT = Path(napari_unet.__file__).parent
MODULE_LINES = 400
FUNCTION_LINES = 60


def code_lines(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of code of a function: no docstring, no comment-only or blank line."""
    body = node.body
    doc = set()
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        doc = set(range(body[0].lineno, body[0].end_lineno + 1))
    return sum(1 for i in range(node.lineno, node.end_lineno + 1)
               if i not in doc and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#"))


def too_long(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        if len(lines) > MODULE_LINES:
            out.append(f"{path.relative_to(root.parent)}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = code_lines(lines, node)
                if n > FUNCTION_LINES:
                    out.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}: "
                               f"{n} lines of code")
    return out


def test_modules_and_functions_are_short():
    assert too_long(ROOT) == []


def test_the_limits_see_a_long_module_and_a_long_function(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(FUNCTION_LINES + 1))
    (pkg / "long.py").write_text('def f():\n    """Doc."""\n    # a comment\n\n' + body + "\n"
                                 + "\n" * MODULE_LINES)
    (pkg / "short.py").write_text('def g():\n    """Doc."""\n' + "\n".join(
        f"    x{i} = {i}" for i in range(FUNCTION_LINES - 1)) + "\n")
    found = too_long(pkg)
    assert len(found) == 2 and "long.py:1 f: 62 lines of code" in found[1]
