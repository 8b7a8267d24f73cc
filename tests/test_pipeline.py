"""The command line: every argument is checked before any set-up, and the pipeline's own promises
(kernels import this checkout, -p and --fresh reach them, failures keep their executed copy, stale
temporaries go, every run is recorded). Pipelines run on tiny throwaway notebooks in a copy of the
package, so each takes seconds."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from helpers import config, pipeline, runs

ROOT = config.ROOT
VENV_BIN = str(Path(sys.executable).parent)


def _clean_env(**extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DIFFUSION_") and k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH")
    }
    return {**env, **extra}


def _copy_package(dest: Path) -> Path:
    shutil.copytree(ROOT / "helpers", dest / "helpers", ignore=shutil.ignore_patterns("__pycache__", "weights"))
    return dest


def _tree(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# --------------------------------------------------------------------------- run_all.sh refuses first
@pytest.fixture
def checkout(tmp_path):
    """run_all.sh, the package and the notebooks, without requirements.txt: a call that got past the
    argument check would fail at once in set-up instead of building an environment."""
    repo = _copy_package(tmp_path / "repo")
    shutil.copy2(ROOT / "run_all.sh", repo)
    shutil.copytree(ROOT / "notebooks", repo / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return repo


@pytest.mark.parametrize(
    "args, message",
    [
        (["--only", "nope"], "--only: 'nope' is not a notebook or 'report'; expected some of ['01_ddpm',"),
        (["--only"], "--only needs at least one name; expected some of ['01_ddpm',"),
        (["--profile="], "profile='' is not allowed; expected one of ['full', 'quick', 'smoke']"),
        (["--profile", ""], "profile='' is not allowed; expected one of ['full', 'quick', 'smoke']"),
        (["--profile", "fast"], "profile='fast' is not allowed"),
        (["-p", "epochs", "3"], "-p epochs: no selected notebook"),
        (
            ["--only", "03_cold_diffusion", "-p", "baseline", "x"],
            "-p baseline: no selected notebook (03_cold_diffusion)",
        ),
        (["--only", "report", "-p", "seed", "1"], "-p seed: no selected notebook (none)"),
        (["-p", "profile", "smoke"], "give the profile with --profile"),
        (["--jobs", "0"], "--jobs='0' is not allowed; expected 'auto' or an integer >= 1"),
        (["--jobs", "many"], "--jobs='many' is not allowed"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--prof", "smoke"], "unrecognized arguments: --prof"),
    ],
)
def test_run_all_refuses_bad_arguments_before_set_up(checkout, args, message):
    before = _tree(checkout)
    r = subprocess.run([str(checkout / "run_all.sh"), *args], env=_clean_env(), capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert _tree(checkout) == before  # no .venv, build/, runs/, lock or bytecode


@pytest.mark.parametrize(
    "args, message",
    [
        (["--only", "01_ddpm", "-p", "seed", "-1"], "01_ddpm.ipynb: seed=-1 is not allowed"),
        (["-p", "preset", "nope"], "01_ddpm.ipynb: preset='nope' is not allowed"),
        (
            ["--only", "03_cold_diffusion", "-p", "cold_variants", "['rows99']"],
            "cold_variants=['rows99'] is not allowed",
        ),
    ],
)
def test_run_all_refuses_bad_values_before_set_up(checkout, args, message):
    # The value checks import torch: with a python3 that has it (here this venv's), they run before set-up too.
    before = _tree(checkout)
    env = _clean_env(PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    r = subprocess.run([str(checkout / "run_all.sh"), *args], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert _tree(checkout) == before


@pytest.mark.parametrize(
    "args, report",
    [
        (["--profile", "smoke", "--only", "01_ddpm", "-p", "seed", "3", "-p", "overrides", "{'lr': 1e-3}"], ""),
        (["--only", "report", "02_hyperparams", "-p", "baseline", "testing"], "report"),
        (["--jobs", "4", "--pretrain", "--fresh"], "report"),
    ],
)
def test_good_arguments_pass_the_check(args, report):
    if "overrides" in args and "overrides" not in pipeline.declared_parameters(config.NOTEBOOKS_DIR / "01_ddpm.ipynb"):
        args = args[:-3]  # until the notebook declares `overrides`
    r = subprocess.run(
        [sys.executable, "-m", "helpers.pipeline", "--check-args", *args],
        cwd=ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == report


def test_help_lists_every_option():
    r = subprocess.run([str(ROOT / "run_all.sh"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for option in ("--profile", "--only", "-p NAME VALUE", "--fresh", "--jobs", "--pretrain", "run_all.sh test"):
        assert option in r.stdout


@pytest.mark.parametrize(
    "text, value",
    [
        ("3", 3),
        ("1e-3", 1e-3),
        ("None", None),
        ("testing", "testing"),
        ("{'lr': 1e-3, 'hidden': [32, 64]}", {"lr": 1e-3, "hidden": [32, 64]}),
        ("[rows7]", "[rows7]"),
    ],
)
def test_parameter_values_are_literals_or_strings(text, value):
    assert pipeline.parse_value(text) == value


def test_declared_parameters_are_read_from_the_tagged_cell():
    declared = pipeline.declared_parameters(config.NOTEBOOKS_DIR / "03_cold_diffusion.ipynb")
    assert declared["cold_preset"] == "columns" and declared["profile"] is None
    assert "rows7" in declared["cold_variants"]


def test_check_env_names_another_checkouts_helpers(tmp_path):
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "__init__.py").write_text("")
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_env.py")],
        capture_output=True,
        text=True,
        env=_clean_env(PYTHONPATH=str(tmp_path)),
    )
    assert r.returncode == 1
    assert f"`import helpers` finds {tmp_path / 'helpers'}, not this checkout's {ROOT / 'helpers'}" in r.stdout


# --------------------------------------------------------------------------- the pipeline on tiny notebooks
def _notebook(path: Path, *cells: str, parameters: str = "profile = None\nseed = 0") -> None:
    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    nb.cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)


@pytest.fixture
def repo(tmp_path):
    """A copy of the package whose notebooks are a probe, one that raises in its third cell and one
    that takes a preset with overrides; kept where users keep files: under a path with spaces,
    brackets and accents."""
    repo = _copy_package(tmp_path / "my study [v2]" / "Übung ñ" / "repo")
    (repo / "notebooks").mkdir()
    _notebook(
        repo / "notebooks" / "01_probe.ipynb",
        "import os, helpers\nprint('helpers:', helpers.__file__)\n"
        "print('fresh:', os.environ.get('DIFFUSION_FRESH'))\nprint('seed:', seed)",
    )
    _notebook(repo / "notebooks" / "02_boom.ipynb", "x = 1", "x / 0")
    _notebook(
        repo / "notebooks" / "03_overrides.ipynb",
        "print('overrides:', overrides)",
        parameters="profile = None\npreset = 'default'\noverrides = {}",
    )
    # their parameters, in the one place the pipeline reads them from (the notebook contract)
    with open(repo / "helpers" / "study.py", "a") as f:
        f.write(
            "\nNOTEBOOKS.clear()\nNOTEBOOKS.update({\n"
            "    '01_probe': Notebook((PROFILE, SEED), roles={}),\n"
            "    '02_boom': Notebook((PROFILE,), roles={}),\n"
            "    '03_overrides': Notebook((PROFILE, Param('preset', 'default', 'ddpm_preset'),"
            " Param('overrides', {}, 'overrides', of='preset')), roles={}),\n})\n"
        )
    return repo


def _pipeline(repo: Path, *args):
    # Run from the copy: its helpers (not the installed ones) are what the pipeline and kernels must use.
    return subprocess.run(
        [sys.executable, "-m", "helpers.pipeline", "--profile", "smoke", *args],
        cwd=repo,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _outputs(nb_path: Path) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


# The tests that execute the tiny notebooks in kernels (14 - 26 s each on a busy 2-core CPU) are slow; those refused
# before any notebook runs stay in the fast loop.
@pytest.mark.slow
def test_kernels_get_this_checkout_parameters_and_fresh_and_the_run_is_recorded(repo):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [
        repo / "build" / "smoke" / f".01_probe.{dead.pid}.tmp.ipynb",
        repo / "Plots" / "smoke" / "sub" / f".fig1_1.{dead.pid}.tmp.png",
        repo / "results" / "smoke" / f".01_probe.{dead.pid}.tmp.json",
    ]
    live = repo / "Plots" / "smoke" / f".fig1_2.{os.getpid()}.tmp.png"  # a writer still at work
    for p in [*stale, live]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("half")

    r = _pipeline(repo, "--only", "01_probe", "-p", "seed", "7", "--fresh")
    assert r.returncode == 0, r.stderr
    out = repo / "build" / "smoke" / "01_probe.ipynb"
    text = _outputs(out)
    assert f"helpers: {repo / 'helpers' / '__init__.py'}" in text
    assert re.search(r"fresh: \d+-\d+", text) and "seed: 7" in text  # a token new for this run
    assert json.loads(out.read_text())["metadata"]["papermill"]["parameters"] == {"profile": "smoke", "seed": 7}
    assert "seed: 7" in (repo / "build" / "smoke" / "01_probe.html").read_text()
    assert not any(p.exists() for p in stale) and live.exists()

    record = json.loads((repo / "results" / "smoke" / "pipeline.json").read_text())
    assert record["profile"] == "smoke"
    assert record["precision"] == runs.precision_for(config.profile("smoke"))[0]
    assert record["notebooks"]["01_probe"]["status"] == "ok"
    assert 0 < record["notebooks"]["01_probe"]["seconds"] <= record["wall_seconds"]
    assert record["git"] == {"commit": None, "clean": None}  # the copy is no git checkout
    assert {"started", "finished", "device", "python", "torch"} <= set(record)

    r = _pipeline(repo, "--only", "01_probe")  # without --fresh the kernels see no flag
    assert r.returncode == 0, r.stderr
    assert "fresh: None" in _outputs(out) and "seed: 0" in _outputs(out)


@pytest.mark.slow
def test_failed_notebook_keeps_its_executed_copy_and_names_the_cell(repo):
    r = _pipeline(repo, "--only", "01_probe", "02_boom")
    assert r.returncode == 1
    failed = repo / "build" / "smoke" / "failed" / "02_boom.ipynb"
    assert "notebook 02_boom failed: cell In [4] ('x / 0') raised ZeroDivisionError: division by zero" in r.stderr
    assert str(failed) in r.stderr
    assert "ZeroDivisionError" in failed.read_text()
    assert not (repo / "build" / "smoke" / "02_boom.ipynb").exists()
    assert (repo / "build" / "smoke" / "01_probe.ipynb").exists()
    assert not [p for p in (repo / "build").rglob(".*") if ".tmp" in p.name]
    record = json.loads((repo / "results" / "smoke" / "pipeline.json").read_text())
    assert {k: v["status"] for k, v in record["notebooks"].items()} == {"01_probe": "ok", "02_boom": "failed"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["-p", "seed", "-1"], "01_probe.ipynb: seed=-1 is not allowed; expected an integer >= 0"),
        (["-p", "overrides", "{'lr': -1}"], "03_overrides.ipynb: overrides: lr=-1 is not allowed"),
        (["-p", "overrides", "{'epochs': 3}"], "03_overrides.ipynb: overrides: override='epochs' is not allowed"),
        (["-p", "preset", "nope"], "03_overrides.ipynb: preset='nope' is not allowed"),
    ],
)
def test_bad_value_stops_before_any_notebook(repo, args, message):
    # 01_probe comes first and would run if the values were checked one notebook at a time
    r = _pipeline(repo, *args)
    assert r.returncode == 2
    assert message in r.stderr
    assert not (repo / "build").exists() and not (repo / "results").exists()


@pytest.mark.slow
def test_overrides_reach_the_notebook_that_declares_them(repo):
    r = _pipeline(repo, "--only", "01_probe", "03_overrides", "-p", "overrides", "{'lr': 1e-3, 'hidden': [8]}")
    assert r.returncode == 0, r.stderr
    assert "overrides: {'lr': 0.001, 'hidden': [8]}" in _outputs(repo / "build" / "smoke" / "03_overrides.ipynb")
    probe = json.loads((repo / "build" / "smoke" / "01_probe.ipynb").read_text())
    assert probe["metadata"]["papermill"]["parameters"] == {"profile": "smoke"}  # it does not declare them


@pytest.mark.slow
def test_pretrain_stage_runs_first_and_spends_fresh(repo):
    (repo / "helpers" / "pretrain.py").write_text(
        "import json, os\n"
        "def default_jobs():\n    return 3\n"
        "def run(profile, jobs, log=print):\n"
        "    open(os.path.join(os.path.dirname(__file__), 'called.json'), 'w').write(json.dumps(\n"
        "        [profile, jobs, os.environ.get('DIFFUSION_FRESH')]))\n    return {}\n"
    )
    r = _pipeline(repo, "--only", "01_probe", "--jobs", "2", "--fresh")
    assert r.returncode == 0, r.stderr
    profile, jobs, token = json.loads((repo / "helpers" / "called.json").read_text())
    assert (profile, jobs) == ("smoke", 2) and re.fullmatch(r"\d+-\d+", token)
    assert "fresh: None" in _outputs(repo / "build" / "smoke" / "01_probe.ipynb")  # runs are new already
    assert json.loads((repo / "results" / "smoke" / "pipeline.json").read_text())["pretrain"]["jobs"] == 2
    (repo / "helpers" / "called.json").unlink()
    assert _pipeline(repo, "--only", "01_probe", "--jobs", "1").returncode == 0  # one job: no stage
    assert not (repo / "helpers" / "called.json").exists()


def test_missing_stages_are_named(repo):
    for name in ("pretrain.py", "report.py"):
        (repo / "helpers" / name).unlink(missing_ok=True)
    r = _pipeline(repo, "--only", "01_probe", "--pretrain")
    assert r.returncode == 1 and "needs helpers/pretrain.py" in r.stderr
    assert not (repo / "build" / "smoke" / "01_probe.ipynb").exists()
    r = _pipeline(repo, "--only", "report")
    assert r.returncode == 1 and "needs helpers/report.py" in r.stderr
