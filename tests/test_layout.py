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


def rule_commands() -> dict[str, str]:
    """{rule: the `<program> <verb>` its shell command starts with} of every rule that runs a step, read from the
    rule files' text; a `use rule A as B` variant runs A's command."""
    import re

    commands = {}
    for path in sorted((PROJECT_ROOT / "workflow" / "rules").glob("*.smk")):
        text = path.read_text()
        for name, body in re.findall(r"^rule (\w+):\n((?:(?:    .*)?\n)*)", text, re.MULTILINE):
            found = re.search(r'shell:\n\s+"(icd|deeplab) ([\w-]+)', body)
            if found:
                commands[name] = f"{found[1]} {found[2]}"
        for original, variant in re.findall(r"^use rule (\w+) as (\w+) with:", text, re.MULTILINE):
            commands[variant] = commands[original]
    return commands


def test_every_rule_runs_the_verb_of_its_name_and_every_verb_has_its_rule():
    from deeplab.cli import build_parser as deeplab_parser
    from icd.cli import build_parser as icd_parser

    commands = rule_commands()
    assert len(commands) > 20
    misnamed = {
        rule: command
        for rule, command in commands.items()
        if not (rule + "_").startswith(command.split()[1].replace("-", "_") + "_")
    }
    assert misnamed == {}, "rule names must equal their verb names (a `use rule` variant may add a suffix)"
    declared = {
        f"{program} {verb}"
        for program, parser in (("icd", icd_parser()), ("deeplab", deeplab_parser()))
        for verb in parser._subparsers._group_actions[0].choices
    }
    assert declared == set(commands.values()), "a verb no rule runs, or a rule running an undeclared verb"
