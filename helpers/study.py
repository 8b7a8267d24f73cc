"""The study itself, in one place:

- RUNS: every run it trains, with its budget, whether it keeps an EMA and the notebook that shows it;
- FIGURES: every figure it saves, by the key the report includes it under;
- NOTEBOOKS: the notebook contract, each notebook's parameters (defaults and allowed values) and the
  roles of the models it shows; the notebooks', the pipeline's and run_all.sh's checks and the
  report's roles all read it;
- Study: the one object a notebook talks to (profile, seed, device and precision resolved once).

Nothing else lists a run, spells a figure's file name or a notebook parameter. At import this module
needs only the standard library and `config` (run_all.sh validates arguments with it before any
environment exists); `Study` imports torch and the heavy modules when it is used.
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
    notebook: the notebook that trains and shows it. profiles: the profiles whose study has it.
    shipped: an explorer opens it (notebook 01's DDPM, notebook 03's cold models), so its final weights
    ship with the repository for profiles too long to train here (helpers/shipped.py)."""

    kind: str  # "ddpm" or "cold"
    preset: str  # a key of config.DDPM_PRESETS or config.COLD_PRESETS
    budget: str = "main"
    ema: bool = False
    notebook: str = ""
    profiles: tuple[str, ...] = tuple(config.PROFILES)
    shipped: bool = False


# Most expensive first: the pre-training stage starts them in this order.
# The U-Net DDPM is compared with the seed's CNN in notebook 04 (appendix C of the report); the U-Net
# restorer only where there is time for it: smoke (that it runs), not quick, and not full, whose
# 20 PFLOP budget (helpers/cost.py) it would exceed by about 1.2 PFLOP.
RUNS: tuple[StudyRun, ...] = (
    StudyRun("ddpm", "default", ema=True, notebook="01_ddpm", shipped=True),
    StudyRun("ddpm", "unet", budget="short", notebook="04_comparison"),
    StudyRun("ddpm", "testing", budget="short", notebook="02_hyperparams"),
    StudyRun("cold", "columns", budget="short", notebook="03_cold_diffusion", shipped=True),
    StudyRun("cold", "columns_unet", budget="short", notebook="03_cold_diffusion", profiles=("smoke",)),
    *(
        StudyRun("cold", name, budget="variant", notebook="03_cold_diffusion", shipped=True)
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


# --------------------------------------------------------------------------- the notebook contract
# Each notebook's parameters (name, default, what is allowed) and the roles of the models it shows.
# The notebook's own check, run_all.sh's `-p` check, the pipeline's check of injected values and the
# report's roles are all derived from this table; a test keeps each notebook's parameters cell equal
# to it.
@dataclass(frozen=True)
class Param:
    """A notebook parameter. `allowed` names its vocabulary (a key of ALLOWED); for "overrides",
    `of` names the parameter whose preset the overrides change."""

    name: str
    default: object
    allowed: str
    of: str = ""


@dataclass(frozen=True)
class Notebook:
    params: tuple[Param, ...]
    roles: dict  # role in the report -> the parameter naming that model

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}


def _check_list(name: str, value, allowed) -> None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v in allowed for v in value):
        raise ValueError(f"{name}={value!r} is not allowed; expected a list of {sorted(allowed)}")


def _optional(check):
    return lambda name, value: None if value is None else check(name, value)


def _device_choices() -> tuple[str, ...]:
    from .hardware import DEVICE_CHOICES

    return DEVICE_CHOICES


# vocabulary -> check(name, value); each raises ValueError naming the parameter and what is allowed
ALLOWED = {
    "profile": _optional(lambda n, v: config.check_choice(n, v, config.PROFILES)),
    "ddpm_preset": lambda n, v: config.check_choice(n, v, config.DDPM_PRESETS),
    "ddpm_preset_or_none": _optional(lambda n, v: config.check_choice(n, v, config.DDPM_PRESETS)),
    "cold_preset": lambda n, v: config.check_choice(n, v, config.COLD_PRESETS),
    "cold_preset_or_none": _optional(lambda n, v: config.check_choice(n, v, config.COLD_PRESETS)),
    "cold_presets": lambda n, v: _check_list(n, v, config.COLD_PRESETS),
    "seed": lambda n, v: config.check_int(n, v, 0, config.MAX_SEED),
    "device": lambda n, v: config.check_choice(n, v, _device_choices()),
    "precision": lambda n, v: config.check_choice(n, v, ("profile",) + config.PRECISION_CHOICES),
    "overrides": None,  # checked against the preset of the parameter `of` names (check_params)
}

PROFILE = Param("profile", None, "profile")
SEED = Param("seed", 0, "seed")
DEVICE = Param("device", "auto", "device")
PRECISION = Param("precision", "profile", "precision")

NOTEBOOKS: dict[str, Notebook] = {
    "01_ddpm": Notebook(
        (PROFILE, Param("preset", "default", "ddpm_preset"), Param("overrides", {}, "overrides", of="preset"),
         SEED, DEVICE, PRECISION),
        roles={"model": "preset"},
    ),
    "02_hyperparams": Notebook(
        (PROFILE, Param("preset", "testing", "ddpm_preset"), Param("baseline", "default", "ddpm_preset"),
         Param("overrides", {}, "overrides", of="preset"), SEED, DEVICE, PRECISION),
        roles={"first": "baseline", "second": "preset"},
    ),
    "03_cold_diffusion": Notebook(
        (PROFILE, Param("cold_preset", "columns", "cold_preset"),
         Param("cold_variants", ["columns7", "rows7", "rows28", "columns_outside_in", "columns_inside_out"],
               "cold_presets"),
         Param("cold_unet_preset", "columns_unet", "cold_preset_or_none"),
         Param("overrides", {}, "overrides", of="cold_preset"), SEED, DEVICE, PRECISION),
        roles={"main-model": "cold_preset"},
    ),
    "04_comparison": Notebook(
        (PROFILE, Param("preset", "default", "ddpm_preset"), Param("cold_preset", "columns", "cold_preset"),
         Param("unet_preset", "unet", "ddpm_preset_or_none"), SEED, DEVICE, PRECISION),
        roles={"ddpm": "preset", "cold": "cold_preset"},
    ),
}  # fmt: skip

# Names IPython puts in every notebook's namespace.
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def notebook(name: str) -> Notebook:
    config.check_choice("notebook", name, NOTEBOOKS)
    return NOTEBOOKS[name]


def check_params(name: str, values: dict, namespace: dict | None = None) -> dict:
    """Validate a notebook's parameters (its defaults updated by `values`) before any work starts and
    return them, in the contract's order. ValueError names the parameter and what is allowed.

    With `namespace` (a notebook's globals()), any other variable defined before the check (a name
    papermill injected that the notebook does not take) is refused too."""
    import types

    book = notebook(name)
    if namespace is not None:
        unknown = sorted(
            k
            for k, v in namespace.items()
            if not k.startswith("_")
            and k not in book.names()
            and k not in _IPYTHON_NAMES
            and not isinstance(v, types.ModuleType)
            and not callable(v)
        )
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r}; {name} takes {book.names()}")
    extra = sorted(set(values) - set(book.names()))
    if extra:
        raise ValueError(f"unknown parameter {extra[0]!r}; {name} takes {book.names()}")
    params = {**book.defaults(), **values}
    for p in book.params:
        if p.allowed != "overrides":
            ALLOWED[p.allowed](p.name, params[p.name])
    by_name = {p.name: p for p in book.params}
    for p in book.params:
        if p.allowed == "overrides":
            kind = "cold" if by_name[p.of].allowed.startswith("cold") else "ddpm"
            _check_overrides(p.name, params[p.name], params[p.of], kind)
    return params


def _check_overrides(name: str, overrides, preset: str, kind: str) -> None:
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise ValueError(
            f"{name}={overrides!r} is not allowed; expected a mapping of field names to values, "
            "e.g. {'lr': 1e-3, 'hidden': [32, 64, 32]}"
        )
    if overrides:
        try:
            config.KIND_PRESETS[kind][preset].replace(**overrides)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name}: {exc}") from None


def roles() -> dict[str, dict[str, str]]:
    """notebook -> {role: parameter naming the model}, for the report."""
    return {name: dict(book.roles) for name, book in NOTEBOOKS.items()}


# --------------------------------------------------------------------------- the Study
class Study:
    """One study as a notebook sees it: a profile, a seed, a device and a precision, resolved once
    here, and every call a notebook makes (train a preset, its final numbers, the real-data rows,
    save a figure or the results) with those filled in.

    `Study.of_notebook("01_ddpm", globals())` checks the notebook's parameters against the contract
    above and builds the study from them (`study.params` holds them). Torch and the heavy modules
    are imported only here, so `helpers.study` itself stays importable with the standard library.
    """

    def __init__(
        self, profile: str | None = None, seed: int = 0, device: str = "auto", precision: str = "profile",
        *, runs_dir=None, progress: bool = True, params: dict | None = None, deadline: float | None = None,
    ):  # fmt: skip
        from . import hardware, runs

        ALLOWED["profile"]("profile", profile)
        ALLOWED["seed"]("seed", seed)
        ALLOWED["device"]("device", device)
        ALLOWED["precision"]("precision", precision)
        if profile is None:
            profile, why = config.default_profile_name()
            print(f"profile: {profile} ({why})")
        self.profile = config.profile(profile)
        self.seed = seed
        self.device = str(hardware.pick_device(device))
        self.precision, self.precision_reason = runs.precision_for(self.profile, device, precision)
        self.fresh = config.fresh_token()
        self.runs_dir = runs_dir
        self.progress = progress
        self.params = dict(params or {})
        self.deadline = deadline  # time.time() at which training stops at its next epoch boundary

    @classmethod
    def of_notebook(cls, name: str, namespace: dict) -> Study:
        """The study of notebook `name`, from the parameters in its `namespace` (checked first)."""
        params = check_params(name, {k: namespace[k] for k in notebook(name).names() if k in namespace}, namespace)
        return cls(params["profile"], params["seed"], params["device"], params["precision"], params=params)

    def __repr__(self) -> str:
        return f"Study({self.profile.name!r}, seed={self.seed}, device={self.device!r}, precision={self.precision!r})"

    # models
    def config(self, kind: str, preset: str, overrides: dict | None = None):
        from . import runs

        return runs.preset_config(kind, preset, overrides)

    def train(self, kind: str, preset: str, overrides: dict | None = None, **train_overrides):
        """The run of a preset (with `overrides`) under this study: trained, or loaded when finished."""
        from . import runs

        return runs.train(
            kind, preset, self.profile, seed=self.seed, overrides=overrides, device=self.device,
            precision=self.precision, runs_dir=self.runs_dir, progress=self.progress, fresh=self.fresh,
            deadline=self.deadline, **train_overrides,
        )  # fmt: skip

    def finished_model(self, kind: str, cfg):
        """The trained model of a preset's configuration if this study's run of it is finished, else None."""
        from . import runs

        return runs.finished_model(
            kind, cfg, self.profile, seed=self.seed, device=self.device, precision=self.precision,
            runs_dir=self.runs_dir,
        )  # fmt: skip

    # derived results
    def final(self, run, use_ema: bool = False) -> dict:
        from . import runs

        return runs.final_metrics(run, self.profile, self.seed, self.progress, use_ema=use_ema, fresh=self.fresh)

    def real(self, n: int | None = None) -> dict:
        """The real-data row at n images (default: the final sample size)."""
        from . import runs

        return runs.real_data_metrics(self.profile, self.seed, n, fresh=self.fresh)

    def real_per_epoch(self) -> dict:
        """The real-data row at the per-epoch sample size (the floor of the per-epoch curves)."""
        return self.real(self.profile.eval_samples)

    def ema_finals(self, run) -> dict:
        """{"raw": ..., "ema": ...}: the final numbers of a run's raw and EMA weights on the same n
        (the raw model's on the first n images of its final sample)."""
        from . import runs

        ema = self.final(run, use_ema=True)
        return {"raw": runs.on_first(self.final(run), ema["n"]), "ema": ema}

    def reconstructions(self, run) -> dict:
        from . import runs

        return runs.reconstruction_metrics(run, self.profile, self.seed, fresh=self.fresh)

    def ddim_sweep(self, run) -> dict:
        from . import analyses

        return analyses.ddim_sweep(run, self.profile, self.seed, self.progress, fresh=self.fresh)

    def trains(self, kind: str, preset: str) -> bool:
        """Whether this profile's study trains (kind, preset)."""
        return trains(kind, preset, self.profile.name)

    # outputs
    def save_figure(self, fig, key: str, preset: str | None = None) -> None:
        """Save `fig` under the report's figure key (FIGURES) in Plots/<profile>/."""
        from . import plotting

        plotting.save(fig, self.profile.name, figure(key, preset))

    def save_results(self, notebook_name: str, real: dict, real_per_epoch: dict, models: dict, **extras):
        """Write results/<profile>/<notebook>.json (the report's input) and say where."""
        from . import results

        block = results.notebook_block(self.params, real, real_per_epoch, models, **extras)
        path = results.save(self.profile.name, notebook_name, block)
        print("numbers saved to", path)
        return path
