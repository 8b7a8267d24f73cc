"""The one place that defines presets, profiles and paths.

Notebooks, tests, `run_all.sh` and the report all read these tables; nothing else spells a
hyperparameter, an epoch count or an output folder.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The values of these tables enter every cache key as values (a run's resolved configuration and
# settings), so an edit here retrains nothing by itself (helpers/store.py code_hash leaves it out).
KEYED_BY_VALUE = True
# Activation functions the CNN accepts (names of torch.nn classes). This module imports only the
# standard library, so run_all.sh can validate its arguments before any environment exists.
ACTIVATIONS = ("GELU", "SELU", "ReLU", "SiLU", "ELU", "LeakyReLU", "Tanh")
# Networks helpers.models.network builds: the seed's CNN, and a small U-Net beyond the seed. The U-Net
# has one entry of `hidden` per resolution (28, 14, 7 pixels), each a multiple of its GroupNorm groups.
NETS = ("cnn", "unet")
UNET_LEVELS = 3
UNET_GROUPS = 8

# --------------------------------------------------------------------------- paths
ROOT = Path(__file__).resolve().parents[1]


def _dir(env: str, default: Path) -> Path:
    value = os.environ.get(env)
    return Path(value).expanduser().resolve() if value else default


DATA_DIR = _dir("DIFFUSION_DATA_DIR", ROOT / "data")  # MNIST in torchvision's layout (git-ignored)
RUNS_DIR = _dir("DIFFUSION_RUNS_DIR", ROOT / "runs")  # cached training runs (git-ignored)
PLOTS_DIR = _dir("DIFFUSION_PLOTS_DIR", ROOT / "Plots")  # figures the notebooks write
BUILD_DIR = _dir("DIFFUSION_BUILD_DIR", ROOT / "build")  # executed notebooks (git-ignored)
WEIGHTS_DIR = ROOT / "helpers" / "weights"  # the classifier's weights and shipped runs (in git)
REPORT_DIR = ROOT / "report"
NOTEBOOKS_DIR = ROOT / "notebooks"


def pythonpath_with_root() -> str:
    """PYTHONPATH with this checkout first: child processes (notebook kernels, pre-training workers)
    then import this `helpers`, even when another checkout is installed."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def fresh_token() -> str | None:
    """The token of `run_all.sh --fresh` (the pipeline puts a new one in DIFFUSION_FRESH for each
    run, so its kernels and workers see it), or None. The `Study` reads it once and passes it on."""
    token = os.environ.get("DIFFUSION_FRESH", "")
    return None if token in ("", "0") else token


def git(*args: str) -> str | None:
    """The output of `git ARGS` in this checkout, or None where git or the repository is missing.
    The one git helper: the pipeline's record and the report's title page read it."""
    import subprocess

    try:
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def git_state() -> dict:
    """{"commit": HEAD or None, "clean": whether the work tree has no changes (None without git)}."""
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None
    return {"commit": commit, "clean": None if status is None else status == ""}


# --------------------------------------------------------------------------- validation
def _fail(field_name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{field_name}={value!r} is not allowed; expected {allowed}")


# Upper limits of integer parameters: what the code can actually hold. Seeds feed torch generators
# after being multiplied by about 1e6 and offset, which must stay below 2**63.
MAX_SEED = 2**31 - 1
MAX_EPOCHS = 100_000
MNIST_TRAIN_SIZE = 60_000
MNIST_TEST_SIZE = 10_000


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None, allowed: str = "") -> None:
    """Refuse anything but an integer in minimum..maximum (`allowed`: how the message says the range)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        _fail(
            name, value, allowed or f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        )


def check_float(
    name: str,
    value: Any,
    low: float,
    high: float | None = None,
    low_open: bool = True,
    high_open: bool = True,
    allowed: str = "",
) -> None:
    """Refuse anything but a finite number between low and high (open ends by default)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        rng = f"{'>' if low_open else '>='} {low}" + (
            f" and {'<' if high_open else '<='} {high}" if high is not None else ""
        )
        _fail(name, value, allowed or f"a finite number {rng}")


def check_choice(name: str, value: Any, allowed) -> None:
    """Refuse a value that is not one of `allowed` (of the same type: True is not 1)."""
    if isinstance(value, bool) or not any(type(value) is type(a) and value == a for a in allowed):
        _fail(name, value, f"one of {sorted(allowed)}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(name, value, "True or False")


def check_epochs(name: str, value: Any) -> None:
    """A tuple of epoch numbers (each >= 1)."""
    if not isinstance(value, tuple) or not all(
        isinstance(e, int) and not isinstance(e, bool) and e >= 1 for e in value
    ):
        _fail(name, value, "a tuple of epochs >= 1")


def check_hidden(hidden: Any) -> None:
    if not (
        isinstance(hidden, tuple)
        and 1 <= len(hidden) <= 32
        and all(isinstance(h, int) and not isinstance(h, bool) and 0 < h <= 4096 for h in hidden)
    ):
        _fail("hidden", hidden, "a tuple of 1 to 32 integers in 1..4096")


def check_net(net: Any, hidden: tuple[int, ...]) -> None:
    """Refuse an unknown network, and for the U-Net a `hidden` it cannot build (after check_hidden)."""
    check_choice("net", net, NETS)
    if net == "unet" and not (len(hidden) == UNET_LEVELS and all(h % UNET_GROUPS == 0 for h in hidden)):
        _fail(
            "hidden",
            hidden,
            f"for net='unet' {UNET_LEVELS} channel counts (at 28, 14 and 7 pixels), "
            f"each divisible by {UNET_GROUPS} (the GroupNorm groups), e.g. (32, 64, 128)",
        )


def check_overrides(cfg: Any, changes: dict) -> None:
    """Refuse an override that names no field of the dataclass `cfg`."""
    names = [f.name for f in dataclasses.fields(cfg)]
    unknown = sorted(set(changes) - set(names))
    if unknown:
        _fail("override", unknown[0], f"one of {names}")


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# --------------------------------------------------------------------------- models
@dataclass(frozen=True)
class DDPMConfig:
    """Hyperparameters of a DDPM (SPEC section 1). Validated when built."""

    T: int = 1000
    betas: tuple[float, float] = (1e-4, 0.02)
    lr: float = 2e-4
    hidden: tuple[int, ...] = (16, 32, 32, 16)
    activation: str = "GELU"
    batch_size: int = 128
    net: str = "cnn"  # one of NETS; "unet" reads `hidden` as its channels per resolution

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", _as_tuple(self.betas))
        object.__setattr__(self, "hidden", _as_tuple(self.hidden))
        check_int("T", self.T, 1, 100_000)
        b = self.betas
        if not (
            isinstance(b, tuple)
            and len(b) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)
            and 0 < b[0] < b[1] < 1
        ):
            _fail("betas", self.betas, "a pair (beta1, beta2) with 0 < beta1 < beta2 < 1")
        check_float("lr", self.lr, 0.0)
        check_hidden(self.hidden)
        check_net(self.net, self.hidden)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_int("batch_size", self.batch_size, 1, 65_536)

    def replace(self, **changes: Any) -> DDPMConfig:
        check_overrides(self, changes)
        return dataclasses.replace(self, **changes)


DDPM_PRESETS: dict[str, DDPMConfig] = {
    # seed table 1.1
    "default": DDPMConfig(),
    # seed table 1.2: the seed's second hyperparameter set
    "testing": DDPMConfig(T=100, lr=6e-4, activation="SELU"),
    # the set the student's final report used instead
    "testing2": DDPMConfig(T=1500, lr=4e-4),
    # the student's lighter network
    "light": DDPMConfig(hidden=(16, 64, 16)),
    # the starter code's suggestion for more capacity
    "more_capacity": DDPMConfig(hidden=(64, 128, 256, 128, 64)),
    # Beyond the seed: the default set with a small U-Net (models.UNet) in place of the CNN. The study's
    # is sized to cost about what the CNN costs per step (fewer parameters, more depth); "unet_wide" is
    # twice as wide (about four times the FLOPs).
    "unet": DDPMConfig(hidden=(16, 32, 64), activation="SiLU", net="unet"),
    "unet_wide": DDPMConfig(hidden=(32, 64, 128), activation="SiLU", net="unet"),
}


def ddpm_preset(name: str, **overrides: Any) -> DDPMConfig:
    check_choice("preset", name, DDPM_PRESETS)
    return DDPM_PRESETS[name].replace(**overrides) if overrides else DDPM_PRESETS[name]


# --------------------------------------------------------------------------- cold diffusion
COLD_AXES = ("rows", "columns")
COLD_GROUPS = (1, 4)  # 1: every row (column) is a step, T = 28; 4: 7 bands of 4, T = 7
COLD_SCHEDULES = ("random", "outside-in", "inside-out")
COLD_LOSSES = ("l2", "l1")


@dataclass(frozen=True)
class ColdConfig:
    """Cold diffusion with row/column averaging (SPEC section 2). T follows from the group size."""

    axis: str = "columns"
    group: int = 1
    schedule: str = "random"
    schedule_seed: int = 0  # draws the random schedule; stored with the model
    lr: float = 2e-4
    hidden: tuple[int, ...] = (16, 32, 32, 16)
    activation: str = "GELU"
    batch_size: int = 128
    loss: str = "l2"
    T: int | None = None  # optional; must equal 28 / group when given
    net: str = "cnn"  # one of NETS; "unet" reads `hidden` as its channels per resolution

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", _as_tuple(self.hidden))
        check_choice("axis", self.axis, COLD_AXES)
        check_choice("group", self.group, COLD_GROUPS)
        check_choice("schedule", self.schedule, COLD_SCHEDULES)
        check_int("schedule_seed", self.schedule_seed, 0, MAX_SEED)
        check_float("lr", self.lr, 0.0)
        check_hidden(self.hidden)
        check_net(self.net, self.hidden)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_int("batch_size", self.batch_size, 1, 65_536)
        check_choice("loss", self.loss, COLD_LOSSES)
        steps = 28 // self.group
        if self.T is None:
            object.__setattr__(self, "T", steps)
        elif steps != self.T:
            _fail("T", self.T, f"{steps} for group={self.group} (28 rows or columns / group size)")

    def replace(self, **changes: Any) -> ColdConfig:
        check_overrides(self, changes)
        if "group" in changes and "T" not in changes:
            changes["T"] = None
        return dataclasses.replace(self, **changes)


COLD_PRESETS: dict[str, ColdConfig] = {
    # seed table 2.1: the main model
    "columns": ColdConfig(),
    # seed appendix variants
    "columns7": ColdConfig(group=4),
    "rows7": ColdConfig(axis="rows", group=4),
    "rows28": ColdConfig(axis="rows"),
    # the schedules the seed defines but never shows
    "columns_outside_in": ColdConfig(schedule="outside-in"),
    "columns_inside_out": ColdConfig(schedule="inside-out"),
    # Beyond the seed: the main model's settings with a small U-Net (models.UNet) as the restorer.
    "columns_unet": ColdConfig(hidden=(16, 32, 64), activation="SiLU", net="unet"),
}


def cold_preset(name: str, **overrides: Any) -> ColdConfig:
    check_choice("cold preset", name, COLD_PRESETS)
    return COLD_PRESETS[name].replace(**overrides) if overrides else COLD_PRESETS[name]


# The model kinds of the study and their presets (helpers.runs.KINDS builds them).
KIND_PRESETS: dict[str, dict] = {"ddpm": DDPM_PRESETS, "cold": COLD_PRESETS}


# --------------------------------------------------------------------------- profiles
PRECISIONS = ("fp32", "bf16", "fp16")  # what a run computes in (fp16 with a gradient scaler)
PRECISION_CHOICES = ("auto",) + PRECISIONS  # what a profile or a notebook may ask for


@dataclass(frozen=True)
class Profile:
    """How much work one run of the study does: the knob `run_all.sh --profile` turns.

    Each run of the study has a budget (helpers/study.py RUNS): "main" trains `epochs` epochs on the
    first `train_limit` training images, "short" `short_epochs` (when set, else `epochs`) on the same
    images, "variant" (the cold-diffusion appendix variants) `variant_epochs` on
    `variant_train_limit`. Which run gets which budget is the study's choice, not the profile's. Every
    sample size below is printed on the figures and tables.
    """

    name: str
    epochs: int
    train_limit: int | None  # first N training images, or None for all 60,000
    sample_epochs: tuple[int, ...]  # epochs at which a fixed-noise sample grid is stored
    eval_epochs: tuple[int, ...]  # epochs at which FID / KID / IS are measured during training
    eval_samples: int  # generated images per per-epoch evaluation
    final_samples: int  # generated images for the final numbers (full: 10,000 vs 10,000 test)
    inception_samples: int  # images for the Inception-v3 FID of final models (0: not computed)
    variant_epochs: int  # the cold-diffusion appendix variants
    variant_train_limit: int | None
    ema_decay: float | None  # EMA of the default DDPM's weights, scored beside the raw ones (None: no EMA)
    ddim_steps: tuple[int, ...]  # DDIM sweep on the default DDPM (plus Prince's sampler at S = T)
    ddim_samples: int
    n_grid: int = 16  # images in each stored sample grid
    short_epochs: int | None = None  # the "short" budget (helpers.study): epochs on train_limit images;
    # None: the main budget's epochs
    precision: str = "fp32"  # "auto": bf16 where the hardware has native bf16 (helpers.hardware)
    ema_eval_epochs: tuple[int, ...] = ()  # epochs (among eval_epochs) at which the EMA weights are scored
    # too, on the same samples' noise as the raw ones; () where the profile keeps no EMA
    ema_final_samples: int | None = None  # generated images of the EMA's final numbers, beside the raw
    # model's numbers on the first as many images of its final sample; None: final_samples
    description: str = ""

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, 0, MAX_EPOCHS)
        check_int("variant_epochs", self.variant_epochs, 0, MAX_EPOCHS)
        if self.short_epochs is not None:
            check_int("short_epochs", self.short_epochs, 0, MAX_EPOCHS)
        for name in ("train_limit", "variant_train_limit"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1, MNIST_TRAIN_SIZE)
        for name in ("eval_samples", "final_samples", "ddim_samples"):
            check_int(name, getattr(self, name), 10, MNIST_TEST_SIZE)
        check_int("n_grid", self.n_grid, 1, 1024)
        check_int("inception_samples", self.inception_samples, 0, MNIST_TEST_SIZE)
        if self.ema_decay is not None:
            check_float("ema_decay", self.ema_decay, 0.0, 1.0)
        check_choice("precision", self.precision, PRECISION_CHOICES)
        for name in ("sample_epochs", "eval_epochs", "ema_eval_epochs"):
            object.__setattr__(self, name, _as_tuple(getattr(self, name)))
            check_epochs(name, getattr(self, name))
        if self.ema_eval_epochs and self.ema_decay is None:
            _fail("ema_eval_epochs", self.ema_eval_epochs, "() where the profile keeps no EMA (ema_decay=None)")
        if not set(self.ema_eval_epochs) <= set(self.eval_epochs):
            _fail("ema_eval_epochs", self.ema_eval_epochs, f"epochs among eval_epochs={self.eval_epochs}")
        if self.ema_final_samples is not None:
            check_int("ema_final_samples", self.ema_final_samples, 10, self.final_samples)


PROFILES: dict[str, Profile] = {
    # The fewest samples every metric still computes on: sampling the T = 1000 DDPM is what CI pays for.
    "smoke": Profile(
        "smoke",
        epochs=1,
        train_limit=1024,
        sample_epochs=(1,),
        eval_epochs=(1,),
        eval_samples=10,  # the least a profile allows: sampling T = 1000 costs per image
        final_samples=10,
        inception_samples=0,
        variant_epochs=1,
        variant_train_limit=512,
        ema_decay=0.9,
        ema_eval_epochs=(1,),
        ddim_steps=(5, 10),
        ddim_samples=10,
        n_grid=4,
        description="CI check that every step runs: 1 epoch on 1,024 images",
    ),
    # Sized by measurement (README: profiles) to finish in under 20 minutes on a 2-core CPU with native
    # bf16. Sampling the T = 1000 DDPM costs about 0.5 s per image there, so the time goes to training
    # the default DDPM past noise (4 epochs, 1,876 steps); the second set, the main cold model and the
    # U-Net get one epoch, the variants one epoch on 2,500 images, the samples stay small, and the EMA
    # and the Inception FID are left to smoke (that they run) and full (what they show).
    "quick": Profile(
        "quick",
        epochs=4,
        train_limit=None,
        sample_epochs=(1, 2, 4),
        eval_epochs=(1, 4),
        eval_samples=50,
        final_samples=100,
        inception_samples=0,
        variant_epochs=1,
        variant_train_limit=2_500,
        ema_decay=None,
        ddim_steps=(10, 20, 50),
        ddim_samples=100,
        short_epochs=1,
        precision="auto",
        description="CPU-sized study: the default DDPM 4 epochs on 60,000 images, the "
        "other main models 1, small samples",
    ),
    # Budgeted with the cost model (helpers/cost.py, docs/cost.md) to at most 20 PFLOP: the main models
    # keep the seed's 100 epochs, grids and 10,000 final samples (Inception-v3 FID on all of them); the
    # appendix variants train 20 epochs (SPEC section 2); FID / KID / IS at 11 epochs on 1,000 samples;
    # the EMA scored at 2 of them and on 1,000 final samples (beside the raw model's first 1,000); the
    # DDIM sweep on 1,000 (its ancestral row: the final sample's first 1,000). The U-Net restorer is left
    # to smoke (helpers/study.py).
    "full": Profile(
        "full",
        epochs=100,
        train_limit=None,
        sample_epochs=(1, 20, 40, 60, 100),
        eval_epochs=(1, *range(10, 101, 10)),
        eval_samples=1000,
        final_samples=10000,
        inception_samples=10000,
        variant_epochs=20,
        variant_train_limit=None,
        ema_decay=0.9999,
        ema_eval_epochs=(20, 50),
        ema_final_samples=1000,
        ddim_steps=(10, 20, 50, 100, 200),
        ddim_samples=1000,
        precision="auto",
        description="the seed's protocol: 100 epochs for the main models, 20 for the appendix variants "
        "(a GPU is advised)",
    ),
}


def profile(name: str) -> Profile:
    check_choice("profile", name, PROFILES)
    return PROFILES[name]


def default_profile_name() -> tuple[str, str]:
    """The profile chosen when none is given, with the reason."""
    import torch

    if torch.cuda.is_available():
        return "full", f"CUDA is available ({torch.cuda.get_device_name(0)})"
    return "quick", "no CUDA device: the full profile would take hours on the CPU"
