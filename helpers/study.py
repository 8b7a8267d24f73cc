"""The study itself: every run it trains, with its budget, whether it keeps an EMA and the notebook
that shows it, and every figure it saves. The pre-training stage, the notebooks and the report read
these two tables; nothing else lists a run of the study or spells a figure's file name.

This module imports only the standard library and `config` (run_all.sh validates arguments with it
before any environment exists).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import config


@dataclass(frozen=True)
class StudyRun:
    """One run of the study under a profile.

    budget: "main" trains `Profile.epochs` on `Profile.train_limit` images, "short"
    `Profile.short_epochs` on the same images, "variant" the profile's smaller appendix budget.
    ema: the run keeps an EMA of its weights (decay `Profile.ema_decay`, in the profiles that set one),
    scored beside the raw ones.
    notebook: the notebook that trains and shows it. profiles: the profiles whose study has it."""

    kind: str  # "ddpm" or "cold"
    preset: str  # a key of config.DDPM_PRESETS or config.COLD_PRESETS
    budget: str = "main"
    ema: bool = False
    notebook: str = ""
    profiles: tuple[str, ...] = tuple(config.PROFILES)


# Most expensive first: the pre-training stage starts them in this order.
# The U-Net DDPM is compared with the seed's CNN in notebook 04 (appendix C of the report); the U-Net
# restorer only where there is time for it: smoke (that it runs), not quick, and not full, whose
# 20 PFLOP budget (helpers/cost.py) it would exceed by about 1.2 PFLOP.
RUNS: tuple[StudyRun, ...] = (
    StudyRun("ddpm", "default", ema=True, notebook="01_ddpm"),
    StudyRun("ddpm", "unet", budget="short", notebook="04_comparison"),
    StudyRun("ddpm", "testing", budget="short", notebook="02_hyperparams"),
    StudyRun("cold", "columns", budget="short", notebook="03_cold_diffusion"),
    StudyRun("cold", "columns_unet", budget="short", notebook="03_cold_diffusion", profiles=("smoke",)),
    *(
        StudyRun("cold", name, budget="variant", notebook="03_cold_diffusion")
        for name in ("columns7", "rows7", "rows28", "columns_outside_in", "columns_inside_out")
    ),
)

BUDGETS = ("main", "short", "variant")


def study_run(kind: str, preset: str) -> StudyRun:
    """The study's entry for (kind, preset); a preset the study does not train (a notebook may be
    given any preset) gets the main budget and no EMA."""
    config.check_choice("kind", kind, config.KIND_PRESETS)
    for r in RUNS:
        if (r.kind, r.preset) == (kind, preset):
            return r
    return StudyRun(kind, preset)


def runs(profile: str | None = None) -> list[StudyRun]:
    """The study's runs (under `profile`: those its study has)."""
    if profile is not None:
        config.check_choice("profile", profile, config.PROFILES)
    return [r for r in RUNS if profile is None or profile in r.profiles]


def trains(kind: str, preset: str, profile: str) -> bool:
    """Whether the study of `profile` trains (kind, preset)."""
    return any((r.kind, r.preset) == (kind, preset) for r in runs(profile))


def names(kind: str | None = None, budget: str | None = None, profile: str | None = None) -> list[str]:
    """The presets of the study's runs, in the table's order (optionally of one kind / budget /
    profile)."""
    return [r.preset for r in runs(profile) if kind in (None, r.kind) and budget in (None, r.budget)]


def epochs_and_limit(prof: config.Profile, budget: str) -> tuple[int, int | None]:
    """(epochs, train_limit) of a budget under a profile."""
    config.check_choice("budget", budget, BUDGETS)
    if budget == "variant":
        return prof.variant_epochs, prof.variant_train_limit
    if budget == "short" and prof.short_epochs is not None:
        return prof.short_epochs, prof.train_limit
    return prof.epochs, prof.train_limit


# --------------------------------------------------------------------------- figures
# Report key -> file name (without .png) under Plots/<profile>/; "{preset}" is the preset the
# notebook shows. The notebooks save under these names and the report includes them by key.
FIGURES: dict[str, str] = {
    "activations": "fig1_1_activations",
    "ddpm-loss": "fig1_2_loss_{preset}",
    "ddpm-samples": "fig1_3_samples_{preset}",
    "ddpm-explorer": "fig1_explorer_{preset}",
    "ddpm-fid": "fig1_4_fid_{preset}",
    "ddpm-is": "fig1_5_is_{preset}",
    "second-loss": "fig1_6_loss_{preset}",
    "second-samples": "fig1_7_samples_{preset}",
    "second-samples-last": "fig1_8_samples_last_{preset}",
    "sets-fid": "fig1_9_fid_sets",
    "sets-is": "fig1_10_is_sets",
    "ddim": "figB_1_ddim_steps",
    "ema": "figB_2_ema",
    "cold-degradation": "fig2_0_degradation_steps",
    "cold-loss": "fig2_1_loss_cold_{preset}",
    "cold-samples": "fig2_samples_cold_{preset}",
    "cold-fid": "fig2_2_fid_cold_{preset}",
    "cold-is": "fig2_3_is_cold_{preset}",
    "cold-reconstructions": "fig2_4_reconstructions_{preset}",
    "cold-explorer": "fig2_explorer_{preset}",
    "variant": "figA_reconstructions_{preset}",
    "comparison-fid": "fig2_5_fid_ddpm_vs_cold",
    "class-histograms": "fig2_6_class_histograms",
    "networks-samples": "figC_1_samples_cnn_unet",
    "networks-fid": "figC_2_fid_cnn_unet",
    "networks-classes": "figC_3_class_histograms_cnn_unet",
}


def figure(key: str, preset: str | None = None) -> str:
    """The file name (without .png) of figure `key`, for `preset` where the name has one."""
    config.check_choice("figure", key, FIGURES)
    template = FIGURES[key]
    if ("{preset}" in template) != (preset is not None):
        raise ValueError(f"figure {key!r} ({template}) takes {'a preset' if '{preset}' in template else 'no preset'}")
    return template.format(preset=preset) if preset is not None else template
