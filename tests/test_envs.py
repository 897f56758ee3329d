"""Conda environments agree with pyproject.toml, and every rule runs in one that exists."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from wsss.core.config import PROJECT_ROOT

ENV_FILES = sorted((PROJECT_ROOT / "envs").glob("*.yaml"))
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]


def project_pins() -> dict[str, SpecifierSet]:
    return {canonicalize_name(req.name): req.specifier for req in map(Requirement, PYPROJECT["dependencies"])}


def conda_entry(entry: str) -> tuple[str, str]:
    """("numpy", ">=1.26,<3") from a conda match spec; "python=3.11" stays "=3.11" (conda's prefix match)."""
    name, spec = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", entry.strip()).groups()
    return canonicalize_name(name), spec.replace(" ", "")


def env_pins(path: Path) -> dict[str, str]:
    """{package: specifier} of an env file, conda and pip entries alike."""
    pins = {}
    for entry in yaml.safe_load(path.read_text())["dependencies"]:
        if isinstance(entry, dict):
            for requirement in map(Requirement, entry["pip"]):
                pins[canonicalize_name(requirement.name)] = str(requirement.specifier)
        else:
            name, spec = conda_entry(entry)
            pins[name] = spec
    return pins


def test_env_files_exist_and_parse():
    assert {path.stem for path in ENV_FILES} >= {"data", "torch", "crf", "report"}
    for path in ENV_FILES:
        env = yaml.safe_load(path.read_text())
        assert env["channels"][0] == "conda-forge", path
        assert "python" in env_pins(path), f"{path}: pin python"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda path: path.name)
def test_every_shared_package_has_the_same_specifier(path):
    project = project_pins()
    shared = {name: spec for name, spec in env_pins(path).items() if name in project}
    assert shared, f"{path} shares no package with pyproject.toml"
    for name, spec in shared.items():
        assert SpecifierSet(spec) == project[name], f"{path.name}: {name}{spec} but pyproject.toml says {project[name]}"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda path: path.name)
def test_python_pin_matches_requires_python(path):
    pin = env_pins(path)["python"]
    assert pin.startswith("="), f"{path.name}: python{pin}"
    series = pin.lstrip("=")
    requires = SpecifierSet(PYPROJECT["requires-python"])
    for candidate in ("3.9.0", "3.10.14", "3.11.0", "3.11.9", "3.12.0", "3.13.1"):
        in_series = candidate.startswith(f"{series}.")
        assert requires.contains(candidate) == in_series, f"{path.name}: python={series} vs requires-python {requires}"


def test_conda_entry_parsing():
    assert conda_entry("numpy>=1.26,<3") == ("numpy", ">=1.26,<3")
    assert conda_entry("scikit-image >=0.22, <0.27") == ("scikit-image", ">=0.22,<0.27")
    assert conda_entry("python=3.11") == ("python", "=3.11")
    assert conda_entry("cxx-compiler") == ("cxx-compiler", "")


def workflow_rules():
    """The parsed workflow's rules, each with its `rule` line in its .smk file (Snakemake's own parser,
    the synthetic default config)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, ResourceSettings, StorageSettings

    with SnakemakeApi() as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(),
            storage_settings=StorageSettings(),
            snakefile=PROJECT_ROOT / "Snakefile",
            workdir=PROJECT_ROOT,
        )
        linemaps = workflow._workflow.linemaps
        return [(rule, linemaps[str(rule.snakefile)][rule.lineno]) for rule in workflow._workflow.rules]


def rule_source(rule, lineno: int) -> str:
    """The rule's block of text in its .smk file: from its `rule` (or `use rule ... as`) line to the next
    unindented line."""
    lines = Path(str(rule.snakefile)).read_text().splitlines()[lineno - 1 :]
    assert re.match(rf"(rule {rule.name}:|use rule \w+ as {rule.name} with:)", lines[0].lstrip()), lines[0]
    block = [lines[0]]
    for line in lines[1:]:
        if line and not line[0].isspace():
            break
        block.append(line)
    return "\n".join(block)


def test_every_rule_with_a_command_has_an_env_a_log_and_threads():
    """And the heavy ones (GPU steps, per-image shards) a benchmark: time and memory per job."""
    rules = [(rule, lineno) for rule, lineno in workflow_rules() if not rule.norun]
    assert len(rules) >= 13
    used = set()
    for rule, lineno in rules:
        assert rule.conda_env, f"{rule.name}: no conda:"
        env = (Path(rule.basedir) / rule.conda_env).resolve()
        assert env in {path.resolve() for path in ENV_FILES}, f"{rule.name}: conda: {rule.conda_env} is not in envs/"
        used.add(env)
        assert rule.log, f"{rule.name}: no log:"
        source = rule_source(rule, lineno)  # a `use rule` inherits its parent's threads
        assert re.search(r"^\s+threads:", source, re.M) or source.startswith("use rule"), f"{rule.name}: no threads:"
        if "gpu" in rule.resources or "shard" in rule.wildcard_names:
            assert rule.benchmark, f"{rule.name}: a heavy step without benchmark:"
    assert used == {path.resolve() for path in ENV_FILES}, "an env file no rule uses"
