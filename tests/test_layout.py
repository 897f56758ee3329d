"""The package layout's import arrows: `icd` -> `wsss` and `deeplab` -> `wsss`, never `icd` <-> `deeplab`, never
`wsss` -> either. Every import statement of every module is read (those inside functions too), not just the top."""

from __future__ import annotations

import ast

import pytest

from wsss.core.config import PROJECT_ROOT

# package -> the project packages it may import (besides itself)
ALLOWED = {"wsss": set(), "icd": {"wsss"}, "deeplab": {"wsss"}}


def imported_packages(source: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def test_the_scanner_sees_imports_anywhere_in_a_module():
    source = "import os\nfrom icd.model import x\ndef f():\n    import deeplab.train\n    from . import y\n"
    assert imported_packages(source) == [(1, "os"), (2, "icd"), (4, "deeplab")]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_only_down_to_the_platform(package):
    forbidden = set(ALLOWED) - ALLOWED[package] - {package}
    crossings = [
        f"{path.relative_to(PROJECT_ROOT)}:{line} imports {name}"
        for path in sorted((PROJECT_ROOT / package).rglob("*.py"))
        for line, name in imported_packages(path.read_text())
        if name in forbidden
    ]
    assert crossings == []
