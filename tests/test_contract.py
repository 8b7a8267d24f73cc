"""The notebook contract (helpers/study.py NOTEBOOKS): one place for each notebook's parameters and
the roles of its models; the notebook's own check, run_all.sh's -p check, the pipeline's value check
and the report's roles all read it."""

import pytest

from helpers import config, pipeline, results, study


def test_every_notebook_has_a_contract_and_its_parameters_cell_matches_it():
    books = {p.stem: p for p in pipeline.notebook_paths()}
    assert set(books) == set(study.NOTEBOOKS) and results.NOTEBOOKS == tuple(study.NOTEBOOKS)
    for name, path in books.items():
        assert pipeline.declared_parameters(path) == study.notebook(name).defaults(), name


def test_roles_name_parameters_of_their_notebook():
    for name, roles in study.roles().items():
        assert set(roles.values()) <= set(study.notebook(name).names()), name


@pytest.fixture
def extra_parameter(monkeypatch):
    """01_ddpm gains a parameter `n_show` (an integer like a seed), in the contract only."""
    book = study.NOTEBOOKS["01_ddpm"]
    grown = study.Notebook((*book.params, study.Param("n_show", 8, "seed")), book.roles)
    monkeypatch.setitem(study.NOTEBOOKS, "01_ddpm", grown)
    return "n_show"


def test_a_parameter_added_in_the_contract_is_accepted_by_every_check(extra_parameter):
    plan = pipeline.validate(["--only", "01_ddpm", "-p", extra_parameter, "3"])  # run_all.sh's check
    assert plan["params"] == {extra_parameter: 3}
    books = plan["books"]
    pipeline.check_values(books, "smoke", plan["params"])  # the pipeline's check of injected values
    assert pipeline.book_parameters(books[0], "smoke", plan["params"]) == {"profile": "smoke", extra_parameter: 3}
    namespace = {**study.notebook("01_ddpm").defaults(), extra_parameter: 3, "profile": "smoke"}
    params = study.check_params("01_ddpm", {extra_parameter: 3, "profile": "smoke"}, namespace)  # the notebook's
    assert params[extra_parameter] == 3 and params["preset"] == "default"


def test_a_bad_value_of_the_added_parameter_is_refused_by_every_check(extra_parameter):
    with pytest.raises(ValueError, match="01_ddpm.ipynb: n_show=-1 is not allowed"):
        pipeline.check_values(pipeline.validate(["--only", "01_ddpm"])["books"], "smoke", {extra_parameter: -1})
    with pytest.raises(ValueError, match="n_show=-1 is not allowed; expected an integer >= 0"):
        study.check_params("01_ddpm", {extra_parameter: -1})


def test_without_the_contract_entry_the_parameter_is_unknown_everywhere():
    with pytest.raises(ValueError, match=r"-p n_show: no selected notebook \(01_ddpm\) declares it"):
        pipeline.validate(["--only", "01_ddpm", "-p", "n_show", "3"])
    with pytest.raises(ValueError, match="unknown parameter 'n_show'"):
        study.check_params("01_ddpm", {"n_show": 3})
    with pytest.raises(ValueError, match="unknown parameter 'n_show'"):
        study.check_params("01_ddpm", {}, {"n_show": 3})


@pytest.mark.parametrize(
    "name, values, message",
    [
        ("01_ddpm", {"preset": "nope"}, "preset='nope' is not allowed"),
        ("01_ddpm", {"overrides": {"lr": -1}}, "overrides: lr=-1 is not allowed"),
        ("01_ddpm", {"overrides": [1]}, r"overrides=\[1\] is not allowed; expected a mapping"),
        ("02_hyperparams", {"baseline": "x"}, "baseline='x' is not allowed"),
        ("03_cold_diffusion", {"overrides": {"axis": "diagonal"}}, "overrides: axis='diagonal' is not allowed"),
        ("03_cold_diffusion", {"cold_variants": ["rows99"]}, r"cold_variants=\['rows99'\] is not allowed"),
        ("04_comparison", {"unet_preset": "columns"}, "unet_preset='columns' is not allowed"),
        ("04_comparison", {"device": "tpu"}, "device='tpu' is not allowed"),
        ("04_comparison", {"precision": "fp8"}, "precision='fp8' is not allowed"),
        ("04_comparison", {"seed": config.MAX_SEED + 1}, "seed=2147483648 is not allowed"),
    ],
)
def test_bad_values_name_the_parameter_and_what_is_allowed(name, values, message):
    with pytest.raises(ValueError, match=message):
        study.check_params(name, values)


def test_optional_presets_accept_none_and_overrides_follow_their_preset():
    assert study.check_params("04_comparison", {"unet_preset": None})["unet_preset"] is None
    assert study.check_params("03_cold_diffusion", {"cold_unet_preset": None, "overrides": {"axis": "rows"}})
    with pytest.raises(ValueError, match="overrides: T=100 is not allowed"):  # a cold preset's T follows its group
        study.check_params("03_cold_diffusion", {"overrides": {"T": 100}})
