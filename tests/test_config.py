import dataclasses

import pytest

from helpers import config
from helpers.training import TrainSettings


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("T", 0, "integer >= 1"),
        ("T", 2.5, "integer >= 1"),
        ("betas", (0.02, 1e-4), "0 < beta1 < beta2 < 1"),
        ("betas", (0.0, 0.02), "0 < beta1 < beta2 < 1"),
        ("betas", (1e-4, 1.0), "0 < beta1 < beta2 < 1"),
        ("lr", 0.0, "> 0.0"),
        ("lr", -1e-3, "> 0.0"),
        ("lr", float("nan"), "finite"),
        ("batch_size", 0, "integer >= 1"),
        ("hidden", (16, 0, 16), "a tuple of 1 to 32 integers in 1..4096"),
        ("hidden", (), "a tuple of 1 to 32 integers in 1..4096"),
        ("activation", "Swish", "GELU"),
    ],
)
def test_bad_model_config_names_field_value_and_allowed(field, value, allowed):
    with pytest.raises(ValueError) as err:
        config.DDPMConfig(**{field: value})
    msg = str(err.value)
    assert msg.startswith(f"{field}={value!r}") and allowed in msg


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match=r"preset='nope'.*default.*testing"):
        config.ddpm_preset("nope")


def test_unknown_override_is_refused():
    with pytest.raises(ValueError, match="override='depth'"):
        config.ddpm_preset("default", depth=3)


def test_unknown_profile_lists_profiles():
    with pytest.raises(ValueError, match=r"profile='fast'.*\['full', 'quick', 'smoke'\]"):
        config.profile("fast")


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"epochs": -1}, "epochs"),
        ({"epochs": 1, "seed": -2}, "seed"),
        ({"epochs": 1, "sample_epochs": (0,)}, "sample_epochs"),
        ({"epochs": 1, "precision": "fp8"}, "precision"),
    ],
)
def test_bad_train_settings(kw, field):
    with pytest.raises(ValueError, match=f"^{field}="):
        TrainSettings(**kw)


@pytest.mark.parametrize(
    "changes, field, allowed",
    [
        ({"ema_eval_epochs": (0,)}, "ema_eval_epochs", "a tuple of epochs >= 1"),
        ({"ema_eval_epochs": (3,)}, "ema_eval_epochs", "epochs among eval_epochs"),
        ({"ema_decay": None}, "ema_eval_epochs", "where the profile keeps no EMA"),
        ({"ema_final_samples": 20_000}, "ema_final_samples", "<= 10000"),
        ({"ema_final_samples": 5}, "ema_final_samples", ">= 10"),
        ({"eval_epochs": (1, 0)}, "eval_epochs", "a tuple of epochs >= 1"),
    ],
)
def test_bad_profile_ema_fields_are_refused_naming_them(changes, field, allowed):
    with pytest.raises(ValueError) as err:
        dataclasses.replace(config.PROFILES["full"], **changes)
    assert str(err.value).startswith(f"{field}=") and allowed in str(err.value)


def test_profile_epoch_lists_may_be_given_as_lists():
    p = dataclasses.replace(config.PROFILES["smoke"], eval_epochs=[1], ema_eval_epochs=[1])
    assert p.eval_epochs == (1,) and p.ema_eval_epochs == (1,)


def test_presets_match_spec_table():
    p = config.DDPM_PRESETS
    assert (p["default"].T, p["default"].lr, p["default"].hidden, p["default"].activation) == (
        1000,
        2e-4,
        (16, 32, 32, 16),
        "GELU",
    )
    assert (p["testing"].T, p["testing"].lr, p["testing"].activation) == (100, 6e-4, "SELU")
    assert (p["testing2"].T, p["testing2"].lr) == (1500, 4e-4)
    assert p["light"].hidden == (16, 64, 16)
    assert p["more_capacity"].hidden == (64, 128, 256, 128, 64)
    assert all(c.betas == (1e-4, 0.02) and c.batch_size == 128 for c in p.values())


def test_config_module_imports_only_the_standard_library():
    import subprocess
    import sys

    code = (
        "import sys; sys.path.insert(0, '.'); import helpers.config; "
        "bad = [m for m in ('torch', 'numpy') if m in sys.modules]; sys.exit(len(bad))"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=config.ROOT).returncode == 0
