"""Every definition fits a screen: a function of gctxseg over ``MAX_LINES`` lines says why in its docstring.

A function is read as a newcomer reads it, top to bottom; past about 60 lines it no longer fits a screen and
usually does two things. A long one is allowed where its docstring has a line starting ``Long because`` (a table
of options read best in one piece). Classes are measured by their methods: a class is read one method at a time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gctxseg

PACKAGE = Path(gctxseg.__file__).parent
MAX_LINES = 60
REASON = "Long because"


def long_definitions(source: str, max_lines: int = MAX_LINES) -> list[tuple[str, int]]:
    """(qualified name, lines) of each function or method in ``source`` longer than ``max_lines`` lines (decorators
    and docstring included) whose docstring has no line starting with ``REASON``."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                lines = child.end_lineno - first + 1
                doc = ast.get_docstring(child) or ""
                reasoned = any(line.strip().startswith(REASON) for line in doc.splitlines())
                if lines > max_lines and not reasoned:
                    found.append((name, lines))
                visit(child, f"{name}.")

    visit(ast.parse(source), "")
    return found


def test_no_definition_over_60_lines_without_a_reason():
    long = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for name, lines in long_definitions(path.read_text()):
            long[f"{module}.{name}"] = lines
    assert not long, (
        f"definitions over {MAX_LINES} lines without a '{REASON} ...' line in their docstring (split them, or say "
        f"why they are one piece): " + ", ".join(f"{n} ({k} lines)" for n, k in sorted(long.items())))


def test_the_checker_counts_lines_and_reads_the_reason():
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    long_function = f"def f():\n{body}\n"
    assert long_definitions(long_function) == [("f", 61)]
    assert long_definitions(long_function, max_lines=61) == []
    reasoned = f'def f():\n    """Sums.\n\n    Long because one table.\n    """\n{body}\n'
    assert long_definitions(reasoned) == []
    method = f"class C:\n    def m(self):\n{body.replace('    ', '        ')}\n"
    assert long_definitions(method) == [("C.m", 61)]  # the class itself is measured by its methods
