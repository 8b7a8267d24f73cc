"""Cache keys name only what decides a result: the values and the code that runs to compute it.

Each test edits a copy of the package the way a contributor would and checks whether a finished run
(or a derived result) is still found: docstrings, other profiles' tables, analyses, plotting and the
report leave it cached; the network, the DDPM or cold process, the degradation, the engine and the
data loading retrain it.
"""

import re
import shutil

import pytest
import torch

from helpers import config, runs, store, training
from helpers.cold import ColdDiffusion
from helpers.ddpm import DDPM
from helpers.training import ModelKind, TrainSettings, fit

TINY = config.DDPMConfig(T=20, hidden=(4,), batch_size=32, lr=2e-3)


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A copy of the helpers package that the code keys read instead of the real one."""
    copy = tmp_path / "helpers"
    shutil.copytree(config.ROOT / "helpers", copy, ignore=shutil.ignore_patterns("__pycache__", "weights"))
    monkeypatch.setattr(store, "PACKAGE_DIR", copy)
    return copy


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def _add_to_first_docstring(path):
    text = path.read_text()
    m = re.search(r'"""', text)
    path.write_text(text[: m.end()] + "Edited wording. " + text[m.end() :])


def _keys(package):
    return {
        "ddpm": training.run_code(ModelKind(DDPM)),
        "cold": training.run_code(ModelKind(ColdDiffusion)),
        "final": runs.derived_key(runs.final_metrics, run="r"),
        "epoch": store.code_hash(("metrics",)),
    }


# (file, edit) pairs that change no result
HARMLESS = [
    ("metrics.py", "docstring"),
    ("training.py", "docstring"),
    ("models.py", "docstring"),
    ("config.py", ("epochs=4,", "epochs=5,")),  # another profile's table (quick), and presets: values
    ("analyses.py", ("    first = next(iter(runs))", "    first = list(runs)[0]")),
    ("plotting.py", ("import seaborn as sns", "import seaborn as sns  # noqa\nSTYLE = 1")),
    ("report.py", "docstring"),
    ("study.py", "docstring"),
    ("tables.py", "docstring"),
    ("store.py", ('TMP_SUFFIX = ".tmp"', "TMP_SUFFIX = '.tmp'\nUNUSED = 0")),
]


@pytest.mark.parametrize(
    "name, edit", HARMLESS, ids=[f"{n}-{'docstring' if e == 'docstring' else 'code'}" for n, e in HARMLESS]
)
def test_edits_that_decide_no_run_leave_every_run_key(package, name, edit):
    before = _keys(package)
    if edit == "docstring":
        _add_to_first_docstring(package / name)
    else:
        _edit(package / name, *edit)
    after = _keys(package)
    assert after["ddpm"] == before["ddpm"] and after["cold"] == before["cold"]


# (file, old, new, keys that must change, keys that must not)
DECISIVE = [
    (
        "models.py",
        "nn.Conv2d(hidden[-1], in_channels, 3, padding=1)",
        "nn.Conv2d(hidden[-1], in_channels, 3, padding=1, bias=False)",
        {"ddpm", "cold"},
        set(),
    ),
    ("ddpm.py", "SAMPLERS = (", "EXTRA = 1\nSAMPLERS = (", {"ddpm"}, {"cold"}),
    ("cold.py", "PRIOR_ITERS = 50", "PRIOR_ITERS = 51", {"cold"}, {"ddpm"}),
    ("degradations.py", "def outside_in(", "def _unused():\n    return 0\n\n\ndef outside_in(", {"cold"}, {"ddpm"}),
    ("training.py", "CHECKPOINTS_KEPT = 2", "CHECKPOINTS_KEPT = 3", {"ddpm", "cold"}, set()),
    (
        "data.py",
        "def to_model_range(",
        "def _unused():\n    return 0\n\n\ndef to_model_range(",
        {"ddpm", "cold"},
        set(),
    ),
    ("metrics.py", "IS_SPLITS = 10", "IS_SPLITS = 11", {"final", "epoch"}, {"ddpm", "cold"}),
]


@pytest.mark.parametrize("name, old, new, changed, kept", DECISIVE, ids=[d[0] for d in DECISIVE])
def test_edits_to_code_that_runs_change_the_keys_it_decides(package, name, old, new, changed, kept):
    before = _keys(package)
    _edit(package / name, old, new)
    after = _keys(package)
    assert {k for k in before if before[k] != after[k]} >= changed
    assert all(before[k] == after[k] for k in kept)


def _blobs(n=64):
    g = torch.Generator().manual_seed(3)
    return torch.nn.functional.interpolate(torch.rand(n, 1, 7, 7, generator=g) - 0.5, size=28, mode="bilinear")


def _train(runs_dir):
    return fit(ModelKind(DDPM), TINY, TrainSettings(epochs=1), label="tiny", data=_blobs(), runs_dir=runs_dir,
               device="cpu", progress=False, log=lambda *_: None)  # fmt: skip


def test_a_finished_run_survives_a_docstring_and_an_analysis_edit_but_not_a_network_edit(package, tmp_path):
    first = _train(tmp_path / "runs")
    _add_to_first_docstring(package / "metrics.py")
    _add_to_first_docstring(package / "training.py")
    _edit(package / "analyses.py", "    first = next(iter(runs))", "    first = list(runs)[0]")
    again = _train(tmp_path / "runs")
    assert again.cached and again.dir == first.dir
    _edit(
        package / "models.py",
        "nn.Conv2d(hidden[-1], in_channels, 3, padding=1)",
        "nn.Conv2d(hidden[-1], in_channels, 3, padding=1, bias=True)",
    )
    retrained = _train(tmp_path / "runs")
    assert not retrained.cached and retrained.dir != first.dir


def _function(tmp_path, name, source):
    import importlib.util

    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.result


def test_a_derived_results_key_holds_its_function_without_the_docstring(tmp_path):
    first = _function(tmp_path, "first", 'def result(x):\n    """First wording."""\n    return x + 1\n')
    reworded = _function(
        tmp_path, "reworded", 'def result(x):\n    """Second, longer wording."""\n\n    return x + 1\n'
    )
    changed = _function(tmp_path, "changed", 'def result(x):\n    """First wording."""\n    return x + 2\n')
    key = runs.derived_key(first, run="r")
    assert runs.derived_key(reworded, run="r") == key
    assert runs.derived_key(changed, run="r") != key
    assert runs.derived_key(first, run="other") != key
