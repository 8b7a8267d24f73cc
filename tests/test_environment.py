"""The project's files agree with each other: pins, notebooks, CI entry point."""

import json
import re

import pytest
import yaml

from helpers import config


def _pins(lines):
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{line!r} is not pinned with =="
            out[name.lower()] = version
    return out


def test_environment_yml_and_requirements_list_the_same_pins():
    req = _pins((config.ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((config.ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_section) == req
    assert "python=3.11" in env["dependencies"]
    assert req["torch"] == "2.14.1" and req["torchvision"] == "0.29.1"


def test_installed_versions_match_the_pins():
    from importlib import metadata

    req = _pins((config.ROOT / "requirements.txt").read_text().splitlines())
    for name, version in req.items():
        assert metadata.version(name).split("+")[0] == version, name


NOTEBOOKS = sorted(config.NOTEBOOKS_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_stripped_and_thin(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert "parameters" in code[0]["metadata"].get("tags", []), "first code cell must be tagged parameters"
    assert re.match(r"\d\d_", path.name)
    src = "\n".join("".join(c["source"]) for c in code)
    for forbidden in ("nn.Module", "optim.", ".backward(", "class "):
        assert forbidden not in src, f"{path.name} holds model or training logic ({forbidden})"


def test_ci_calls_the_readme_test_command():
    assert "./run_all.sh test" in (config.ROOT / ".ci" / "run").read_text()
    assert "./run_all.sh test" in (config.ROOT / "README.md").read_text()
