"""A budget you can compute: the work a profile asks for, and the time it takes at given rates.

    python -m helpers.cost --profile full [--rates NAME_OR_FILE.json ...] [--device cpu|cuda]

Everything is counted from the study's table (helpers/study.py: the runs, their budgets, which keeps
an EMA, which notebook shows it) and the profile (helpers/config.py PROFILES); there is no hand table
of the study here. Pure computation: each run's network is built on the CPU only to measure it with
`models.describe`; nothing is trained or sampled.

What is counted, per run of the study:

- training: `epochs x ceil(images / batch)` optimiser steps on `epochs x images` training images
  (study.epochs_and_limit), at TRAIN_FLOPS_PER_IMAGE = 3 forward passes per training image (the
  forward pass and a backward pass of about twice its cost: gradients of the activations and of the
  weights, the usual rule of thumb);
- sampler network calls, at the sampling batch of the device (hardware.SAMPLING_BATCH): the sample
  grids (`n_grid` images in one batch at each sample epoch), the per-epoch evaluation (`eval_samples`
  images at each eval epoch up to the run's last; the EMA weights too at `ema_eval_epochs` where the
  run keeps one), the final samples (`final_samples`; the EMA's `ema_final_samples`), the DDIM sweep,
  the cold-diffusion reconstructions and the notebooks' example figures. A DDPM image costs T network
  calls with Prince's sampler and S with DDIM; cold diffusion's Algorithm 2 (its unconditional
  sampler) T restorer calls, Algorithm 1 T and the direct reconstruction 1 (cold.sample_cold), so
  cold.reconstructions (degraded, direct, Algorithm 1, Algorithm 2) costs 2T + 1 calls per test image;
- feature passes: the MNIST classifier over every scored image set (its FLOPs measured like the
  networks'), Inception-v3 over the first `inception_samples` of each final sample
  (INCEPTION_GFLOP per image); the reference and real-data features once per (network, split, n),
  since they are cached.

The EMA's extra views and the DDIM sweep are counted as the profile's fields say (the engine changes
that make the pipeline do exactly this are in docs/cost.md): the EMA is scored at `ema_eval_epochs`
only; its final numbers are on `ema_final_samples` images, beside the raw model's numbers on the first
`ema_final_samples` images of the raw final sample (scored again, not drawn again); the DDIM sweep's
ancestral row is the first `ddim_samples` images of the final sample, and the ancestral sampler draws
only TIMING_SAMPLES images to be timed beside DDIM.

FLOPs per image are torch's FlopCounterMode counts (models.describe): convolutions and matrix products,
a multiply-add being 2 FLOPs. Not counted: norms, activations, the degradation, the sampler's own
arithmetic, the metrics' statistics (FID, KID subsets, bootstrap), the cold prior's EM fit, data
loading, checkpoints, plotting and notebook overheads.

Time: `predict(profile, rates)`. Each item takes its images / the rate of its network (training
images/s, sampler image-steps/s, feature images/s), and, where a rate set has floors, never less than
its calls x the floor per call. `stated_rates(name)` gives the stated rate sets (RATE_SETS) with their
sources; a measured set is a dict with the keys RATE_KEYS (`rates_from_gpu_check` builds one from
what scripts/gpu_check.py measures).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

from . import config, study
from .hardware import SAMPLING_BATCH
from .runs import PROTOCOL

# --------------------------------------------------------------------------- constants
TRAIN_FLOPS_PER_IMAGE = 3  # forward passes per training image: forward + backward (about 2 forwards)

# Inception-v3 (FID network, 299 x 299 x 3 input, up to pool3): 11.42 GFLOP per image, a multiply-add
# being 2 FLOPs as in models.describe. Counted with torch's FlopCounterMode on torchvision's
# inception_v3 (weights=None, aux_logits=False) up to pool3: 11.4224 GFLOP (11.4264 with its 1,000-way
# classifier layer, which the FID network lacks); the FID network has the same convolutions. The
# figure often quoted, 5.7 "GFLOPS" (torchvision's model table: 5.71 for Inception_V3_Weights), counts
# multiply-adds, i.e. the same 11.4 GFLOP. The bilinear resize from 28 x 28 is not counted.
INCEPTION_GFLOP = 11.42

# The DDIM sweep draws this many images with the ancestral sampler only to time it beside DDIM.
TIMING_SAMPLES = PROTOCOL.timing_samples
# Images per call of cold.reconstructions (its `batch_size` default), on every device.
RECON_BATCH = 1000
# Images of the notebooks' example figures: the DDPM explorer (01) samples EXAMPLE_IMAGES with its
# trajectory; 03 shows cold.reconstructions and unconditional samples of EXAMPLE_IMAGES test images for
# the main cold model and each variant (analyses.cold_examples), and the degradation explorer's
# figure restores them from EXPLORER_FRAMES evenly spaced t (explore.DegradationExplorer.figure).
EXAMPLE_IMAGES = 8
EXPLORER_FRAMES = 5
# The extra views (DDIM sweep, EMA against raw weights) of notebook 02_hyperparams, on its baseline run.
EXTRA_VIEWS_RUN = ("ddpm", "default")
EXTRA_VIEWS_NOTEBOOK = "02_hyperparams"

UNITS = ("train", "sample", "features")

# --------------------------------------------------------------------------- rates
# A rate set: images per second for each key, plus what it is. "train/<net>": training images/s of
# the study's network (batch 128); "sample/<net>": sampler image-steps/s (one image through one
# network call) at the device's sampling batch; "classifier", "inception": feature images/s.
RATE_KEYS = ("train/cnn", "train/unet", "sample/cnn", "sample/unet", "classifier", "inception")
RATE_FLOORS = ("step_floor_s", "call_floor_s")  # optional: least seconds per optimiser step / sampler call


_CNN_CFG = config.DDPM_PRESETS["default"]
_UNET_CFG = config.DDPM_PRESETS["unet"]

# ASSUMPTION, not a measurement (no GPU has run this study yet): what an H200 achieves on these small
# networks. Peak dense bf16 is about 990 TFLOP/s; 7x7 convolutions with 16 - 64 channels, LayerNorm and
# GroupNorm in NCHW are far from it, so 50 TFLOP/s (5%) is assumed for training and sampling, 100
# TFLOP/s for Inception-v3 (wide convolutions, TF32), and floors for the launch and Python overhead of
# small calls: 1 ms per optimiser step (forward, backward, fused Adam, EMA) and 0.3 ms per sampler call.
# scripts/gpu_check.py measures the real rates; feed them to predict() instead.
H200_ASSUMED = {
    "network_tflops": 50.0,
    "inception_tflops": 100.0,
    "step_floor_s": 1e-3,
    "call_floor_s": 3e-4,
    "source": "ASSUMED, not measured: 50 TFLOP/s achieved on the study's networks (bf16), 100 on "
    "Inception-v3, at least 1 ms per training step and 0.3 ms per sampler call (helpers/cost.py)",
}


def _derived_h200() -> dict:
    """The H200 assumption: rates derived from the FLOPs at an assumed achieved throughput."""
    cnn, unet, clf = network_mflops(_CNN_CFG), network_mflops(_UNET_CFG), classifier_mflops()
    net_tflops, inception_tflops = H200_ASSUMED["network_tflops"], H200_ASSUMED["inception_tflops"]
    return {
        "device": "cuda",
        "precision": "bf16",
        "source": H200_ASSUMED["source"],
        "train/cnn": net_tflops * 1e12 / (TRAIN_FLOPS_PER_IMAGE * cnn * 1e6),
        "train/unet": net_tflops * 1e12 / (TRAIN_FLOPS_PER_IMAGE * unet * 1e6),
        "sample/cnn": net_tflops * 1e12 / (cnn * 1e6),
        "sample/unet": net_tflops * 1e12 / (unet * 1e6),
        "classifier": net_tflops * 1e12 / (clf * 1e6),
        "inception": inception_tflops * 1e12 / (INCEPTION_GFLOP * 1e9),
        "step_floor_s": H200_ASSUMED["step_floor_s"],
        "call_floor_s": H200_ASSUMED["call_floor_s"],
    }


# Stated CPU rates, measured with scripts/benchmark.py and scripts/budget_probe.py on an AMD EPYC with
# AVX-512 BF16 (2 threads, torch 2.14.1) at commit d1db4d3, the machine of the quick run in docs/quick.md.
_EPYC = "AMD EPYC (2 threads, AVX-512 BF16), measured at commit d1db4d3"
STATED_CPU = {
    "cpu-epyc-bf16": {
        "device": "cpu",
        "precision": "bf16",
        "source": f"{_EPYC}: training 718 (CNN) and 815 (U-Net) images/s, bf16; "
        "sampler 2,233 (CNN, batch 64) and 2,595 (U-Net, batch 64) "
        "img-steps/s; Inception-v3 about 6 images/s; classifier derived: its FLOPs at the "
        "CNN's fp32 sampler FLOP rate (936 x 158.9 MFLOP/s)",
        "train/cnn": 718.0,
        "train/unet": 815.0,
        "sample/cnn": 2233.0,
        "sample/unet": 2595.0,
        "classifier": None,  # derived below
        "inception": 6.0,
    },
    "cpu-epyc-fp32": {
        "device": "cpu",
        "precision": "fp32",
        "source": f"{_EPYC}: CNN training 386 images/s (engine fp32), sampler 936 img-steps/s "
        "(batch 64); the U-Net's fp32 rates derived from its bf16 ones with the CNN's fp32/bf16 ratios "
        "(not measured); Inception-v3 about 6 images/s; classifier derived as for bf16",
        "train/cnn": 386.0,
        "train/unet": 815.0 * 386.0 / 718.0,
        "sample/cnn": 936.0,
        "sample/unet": 2595.0 * 936.0 / 2233.0,
        "classifier": None,
        "inception": 6.0,
    },
}
RATE_SETS = ("cpu-epyc-bf16", "cpu-epyc-fp32", "h200-assumed")


def stated_rates(name: str) -> dict:
    """A stated rate set by name (RATE_SETS), with its source."""
    config.check_choice("rates", name, RATE_SETS)
    if name == "h200-assumed":
        return _derived_h200()
    out = dict(STATED_CPU[name])
    # the classifier (fp32 everywhere) at the CNN's measured fp32 sampler FLOP rate
    fp32_flop_rate = STATED_CPU["cpu-epyc-fp32"]["sample/cnn"] * network_mflops(_CNN_CFG)
    out["classifier"] = fp32_flop_rate / classifier_mflops()
    return out


def check_rates(rates: Mapping) -> dict:
    """The rate set as a plain dict, every key of RATE_KEYS present and positive; a missing or bad
    rate is an error naming it."""
    if not isinstance(rates, Mapping):
        raise ValueError(f"rates={rates!r} is not allowed; expected a mapping with the keys {list(RATE_KEYS)}")
    missing = [k for k in RATE_KEYS if k not in rates]
    if missing:
        raise ValueError(f"rates: missing {missing[0]!r} (images per second; every rate set needs {list(RATE_KEYS)})")
    for k in RATE_KEYS:
        config.check_float(f"rates[{k!r}]", rates[k], 0.0)
    for k in RATE_FLOORS:
        if rates.get(k) is not None:
            config.check_float(f"rates[{k!r}]", rates[k], 0.0, low_open=False)
    device = rates.get("device", "cpu")
    config.check_choice("rates['device']", device, tuple(SAMPLING_BATCH))
    return {**dict(rates), "device": device}


def load_rates(spec: str) -> dict:
    """A stated set's name, or a JSON file holding a rate set (scripts/gpu_check.py can write one)."""
    if spec in RATE_SETS:
        return stated_rates(spec)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"rates={spec!r} is not allowed; expected one of {list(RATE_SETS)} or a JSON file")
    rates = json.loads(path.read_text())
    rates.setdefault("source", str(path))
    return check_rates(rates)


def rates_from_gpu_check(
    measured: Mapping,
    inception_seconds_per_image: float,
    device: str = "cuda",
    precision: str = "bf16",
    train_batch: int = 128,
    sample_batch: int | None = None,
) -> dict:
    """A rate set from scripts/gpu_check.py's measurements (seconds per call): `ddpm_train` (one
    optimiser step of the default DDPM at `train_batch`), `ddpm_sample_500` (one sampler step at
    `sample_batch`, default the device's sampling batch) and Inception-v3's seconds per image; with
    `unet_train` and `unet_sample` where it measures the U-Net too. Where it does not, the U-Net's rates
    and the classifier's are derived from the CNN's achieved FLOP rate (the source says so)."""
    sample_batch = sample_batch or SAMPLING_BATCH[device]
    cnn, unet, clf = network_mflops(_CNN_CFG), network_mflops(_UNET_CFG), classifier_mflops()
    train_cnn = train_batch / measured["ddpm_train"]
    sample_cnn = sample_batch / measured["ddpm_sample_500"]
    derived = []
    if "unet_train" in measured:
        train_unet = train_batch / measured["unet_train"]
    else:
        train_unet, derived = train_cnn * cnn / unet, derived + ["train/unet"]
    if "unet_sample" in measured:
        sample_unet = sample_batch / measured["unet_sample"]
    else:
        sample_unet, derived = sample_cnn * cnn / unet, derived + ["sample/unet"]
    rates = {
        "device": device,
        "precision": precision,
        "source": "measured by scripts/gpu_check.py; derived from the CNN's achieved FLOP rate, not measured: "
        + ", ".join(derived + ["classifier"]),
        "train/cnn": train_cnn,
        "train/unet": train_unet,
        "sample/cnn": sample_cnn,
        "sample/unet": sample_unet,
        "classifier": sample_cnn * cnn / clf,
        "inception": 1.0 / inception_seconds_per_image,
    }
    return check_rates(rates)


# --------------------------------------------------------------------------- FLOPs per image
@cache
def _describe(net: str, hidden: tuple[int, ...], activation: str) -> float:
    import torch

    from . import models

    with torch.random.fork_rng(devices=[]):  # building a network draws its initial weights
        cfg = dataclasses.replace(_CNN_CFG, net=net, hidden=hidden, activation=activation)
        return models.describe(models.network(cfg))["mflops_per_image"]


def network_mflops(cfg) -> float:
    """MFLOP of one forward pass of the network a DDPM or cold configuration names (models.describe,
    on the CPU)."""
    return _describe(cfg.net, tuple(cfg.hidden), cfg.activation)


@lru_cache(maxsize=1)
def classifier_mflops() -> float:
    """MFLOP of the MNIST classifier's features (and logits) of one image, counted like describe's."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .classifier import MNISTClassifier

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        model = MNISTClassifier().eval()
        counter = FlopCounterMode(display=False)
        with counter:
            model.logits_from_features(model.features(torch.zeros(1, 1, 28, 28)))
    return counter.get_total_flops() / 1e6


# --------------------------------------------------------------------------- what is counted
@dataclass(frozen=True)
class Work:
    """One kind of work of a run or notebook: `calls` network calls (optimiser steps, sampler calls or
    feature batches) of up to `batch` images each, `images` images in all (training images, sampler
    image-steps, feature images), `flops` FLOPs."""

    notebook: str
    run: str  # "kind preset", or "" for the notebook's shared work (reference and real-data features)
    what: str
    net: str  # "cnn", "unet", "classifier" or "inception"
    unit: str  # one of UNITS
    calls: int
    batch: int
    images: int
    flops: float

    @property
    def rate_key(self) -> str:
        return f"{self.unit}/{self.net}" if self.unit in ("train", "sample") else self.net


@dataclass
class RunCost:
    """The work of one run of the study under a profile."""

    kind: str
    preset: str
    notebook: str
    budget: str
    net: str
    T: int
    epochs: int
    train_images: int  # images per epoch
    mflops_per_image: float
    work: list[Work] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.preset}"

    def _sum(self, unit: str, attr: str, nets=None) -> int:
        return sum(getattr(w, attr) for w in self.work if w.unit == unit and (nets is None or w.net in nets))

    @property
    def steps(self) -> int:
        return self._sum("train", "calls")

    @property
    def sampler_calls(self) -> int:
        return self._sum("sample", "calls")

    @property
    def image_steps(self) -> int:
        return self._sum("sample", "images")

    @property
    def classifier_images(self) -> int:
        return self._sum("features", "images", ("classifier",))

    @property
    def inception_images(self) -> int:
        return self._sum("features", "images", ("inception",))

    @property
    def flops(self) -> float:
        return sum(w.flops for w in self.work)


@dataclass
class StudyCost:
    """Everything a profile's study computes, on a device (which sets the sampling batch)."""

    profile: str
    device: str
    sampling_batch: int
    runs: list[RunCost]
    shared: list[Work]  # reference and real-data features (cached once, run by the first notebook needing them)

    @property
    def work(self) -> list[Work]:
        return [w for r in self.runs for w in r.work] + self.shared

    @property
    def flops(self) -> float:
        return sum(w.flops for w in self.work)

    @property
    def notebooks(self) -> list[str]:
        return sorted({w.notebook for w in self.work})

    def by_notebook(self) -> dict[str, float]:
        return {nb: sum(w.flops for w in self.work if w.notebook == nb) for nb in self.notebooks}

    def by_what(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for w in self.work:
            out[w.what] = out.get(w.what, 0.0) + w.flops
        return out

    def predict(self, rates: Mapping) -> Prediction:
        return _predict(self, rates)

    def as_dict(self) -> dict:
        """Plain data (JSON-ready)."""
        return {
            "profile": self.profile,
            "device": self.device,
            "sampling_batch": self.sampling_batch,
            "flops": self.flops,
            "runs": [
                {
                    "run": r.label,
                    "notebook": r.notebook,
                    "budget": r.budget,
                    "net": r.net,
                    "T": r.T,
                    "epochs": r.epochs,
                    "train_images": r.train_images,
                    "mflops_per_image": r.mflops_per_image,
                    "steps": r.steps,
                    "sampler_calls": r.sampler_calls,
                    "image_steps": r.image_steps,
                    "flops": r.flops,
                    "work": [dataclasses.asdict(w) for w in r.work],
                }
                for r in self.runs
            ],
            "shared": [dataclasses.asdict(w) for w in self.shared],
            "notebooks": self.by_notebook(),
        }


class _Counter:
    """Builds the Work items of a study, registering each cached feature set once."""

    def __init__(self, prof: config.Profile, device: str):
        self.prof, self.device = prof, device
        self.batch = SAMPLING_BATCH[device]
        self.clf = classifier_mflops()
        self.seen: set[tuple[str, str, int]] = set()
        self.shared: list[Work] = []

    def sample(self, nb: str, run: RunCost, what: str, n: int, calls_per_image: int, batch: int | None = None):
        """n images, each through `calls_per_image` network calls, in batches of `batch`."""
        b = min(batch or self.batch, n)
        if n <= 0 or calls_per_image <= 0:
            return
        run.work.append(
            Work(
                nb,
                run.label,
                what,
                run.net,
                "sample",
                math.ceil(n / b) * calls_per_image,
                b,
                n * calls_per_image,
                n * calls_per_image * run.mflops_per_image * 1e6,
            )
        )

    def features(self, nb: str, run: RunCost | None, what: str, backend: str, n: int) -> None:
        if n <= 0:
            return
        per_image = self.clf * 1e6 if backend == "classifier" else INCEPTION_GFLOP * 1e9
        # batches of metrics.extract (classifier) and inception.load_inception (200 on CUDA, 50 elsewhere)
        batch = 1000 if backend == "classifier" else 200 if self.device == "cuda" else 50
        label = run.label if run is not None else ""
        item = Work(nb, label, what, backend, "features", math.ceil(n / batch), batch, n, n * per_image)
        (run.work if run is not None else self.shared).append(item)

    def score(self, nb: str, run: RunCost, what: str, n: int, inception: int = 0) -> None:
        """Features of n generated images (classifier; Inception of the first `inception`), and the
        test references of those sizes the first time they are needed."""
        self.features(nb, run, what, "classifier", n)
        self.reference(nb, "classifier", "test", n)
        if inception:
            self.features(nb, run, what, "inception", inception)
            self.reference(nb, "inception", "test", inception)

    def reference(self, nb: str, backend: str, split: str, n: int) -> None:
        n = min(n, config.MNIST_TEST_SIZE) if split == "test" else n
        if (backend, split, n) not in self.seen:
            self.seen.add((backend, split, n))
            what = "reference features (test)" if split == "test" else "real-data features (train)"
            self.features(nb, None, what, backend, n)


def _run_cost(r: study.StudyRun, prof: config.Profile) -> RunCost:
    cfg = config.KIND_PRESETS[r.kind][r.preset]
    epochs, limit = study.epochs_and_limit(prof, r.budget)
    return RunCost(
        r.kind,
        r.preset,
        r.notebook,
        r.budget,
        cfg.net,
        cfg.T,
        epochs,
        limit or config.MNIST_TRAIN_SIZE,
        network_mflops(cfg),
    )


def count(
    profile: str | config.Profile, device: str = "cuda", study_runs: list[study.StudyRun] | None = None
) -> StudyCost:
    """The work of a profile's study on `device` ("cpu", "cuda" or "mps": it sets the sampling batch).
    `study_runs`: the runs to count (default: those of study.runs(profile); a test passes another
    table to count an earlier definition of the study)."""
    prof = profile if isinstance(profile, config.Profile) else config.profile(profile)
    config.check_choice("device", device, tuple(SAMPLING_BATCH))
    c = _Counter(prof, device)
    study_runs = study.runs(prof.name) if study_runs is None else list(study_runs)
    runs = [_run_cost(r, prof) for r in study_runs]
    entries = {(r.kind, r.preset): r for r in study_runs}
    has_ema = lambda rc: entries[(rc.kind, rc.preset)].ema and prof.ema_decay is not None  # noqa: E731
    notebooks = sorted({r.notebook for r in runs} | ({EXTRA_VIEWS_NOTEBOOK} if EXTRA_VIEWS_RUN in entries else set()))
    first = notebooks[0]

    # the real-data rows (real_data_metrics at the per-epoch and the final size), computed by the first
    # notebook and cached
    for n in (prof.eval_samples, prof.final_samples):
        c.reference(first, "classifier", "train", n)
        c.reference(first, "classifier", "test", n)
    if prof.inception_samples:
        c.reference(first, "inception", "train", prof.inception_samples)
        c.reference(first, "inception", "test", prof.inception_samples)

    for nb in notebooks:
        for rc in (rc for rc in runs if rc.notebook == nb):
            T, ema = rc.T, has_ema(rc)
            # training
            bs = config.KIND_PRESETS[rc.kind][rc.preset].batch_size
            images = rc.epochs * rc.train_images
            rc.work.append(
                Work(
                    nb,
                    rc.label,
                    "training",
                    rc.net,
                    "train",
                    rc.epochs * math.ceil(rc.train_images / bs),
                    bs,
                    images,
                    images * TRAIN_FLOPS_PER_IMAGE * rc.mflops_per_image * 1e6,
                )
            )
            # sample grids and the per-epoch evaluation (runs.settings_for)
            grids = [e for e in prof.sample_epochs if e <= rc.epochs]
            c.sample(nb, rc, "sample grids", len(grids) * prof.n_grid, T, batch=prof.n_grid)
            for label, epochs in (
                ("per-epoch evaluation", prof.eval_epochs),
                ("per-epoch evaluation, EMA", prof.ema_eval_epochs if ema else ()),
            ):
                for e in epochs:
                    if e <= rc.epochs:
                        c.sample(nb, rc, label, prof.eval_samples, T)
                        c.score(nb, rc, label, prof.eval_samples)
            # final samples (runs.final_metrics)
            c.sample(nb, rc, "final samples", prof.final_samples, T)
            c.score(nb, rc, "final samples", prof.final_samples, min(prof.inception_samples, prof.final_samples))
            if rc.kind == "cold":
                # reconstructions of final_samples test images, four FIDs (runs.reconstruction_metrics)
                c.sample(nb, rc, "reconstructions", prof.final_samples, 2 * T + 1, batch=RECON_BATCH)
                for _ in range(4):
                    c.score(nb, rc, "reconstructions", prof.final_samples)
                if rc.net == "cnn":  # 03 shows examples of the main model and the variants
                    c.sample(nb, rc, "examples", EXAMPLE_IMAGES, 3 * T + 1, batch=EXAMPLE_IMAGES)
                    if rc.budget != "variant":  # the degradation explorer's figure, on the main model
                        ts = [round(j * T / (EXPLORER_FRAMES - 1)) for j in range(1, EXPLORER_FRAMES)]
                        c.sample(nb, rc, "examples", EXAMPLE_IMAGES, sum(1 + t for t in ts), batch=EXAMPLE_IMAGES)
            elif rc.budget == "main" and rc.notebook == first:  # the DDPM explorer of 01
                c.sample(nb, rc, "examples", EXAMPLE_IMAGES, T, batch=EXAMPLE_IMAGES)

        # the extra views of the default DDPM (02: ddim_sweep, EMA final numbers)
        if nb == EXTRA_VIEWS_NOTEBOOK and EXTRA_VIEWS_RUN in entries:
            rc = next(rc for rc in runs if (rc.kind, rc.preset) == EXTRA_VIEWS_RUN)
            n = prof.ddim_samples
            # runs.final_subsets: a run with an EMA also scores its final sample's first n images
            subsets = {k for k in (n, prof.ema_final_samples or prof.final_samples) if k < prof.final_samples}
            subsets = subsets if has_ema(rc) else set()
            for k in sorted(subsets):
                c.score(nb, rc, "final samples, first images", k, min(prof.inception_samples, k))
            if n == prof.final_samples or n in subsets:  # the ancestral row: the final sample's first n
                c.sample(nb, rc, "DDIM sweep", min(TIMING_SAMPLES, n), rc.T)  # timed only
            else:
                c.sample(nb, rc, "DDIM sweep", n, rc.T)
                c.score(nb, rc, "DDIM sweep", n)
            for s in (s for s in prof.ddim_steps if s <= rc.T):
                for _eta in PROTOCOL.ddim_etas:
                    c.sample(nb, rc, "DDIM sweep", n, s)
                    c.score(nb, rc, "DDIM sweep", n)
            if has_ema(rc):
                n_ema = prof.ema_final_samples or prof.final_samples
                inc = min(prof.inception_samples, n_ema)
                c.sample(nb, rc, "final samples, EMA", n_ema, rc.T)
                c.score(nb, rc, "final samples, EMA", n_ema, inc)
    return StudyCost(prof.name, device, c.batch, runs, c.shared)


# --------------------------------------------------------------------------- time
@dataclass
class Prediction:
    """Predicted seconds of a profile's study at a rate set: per item, run, notebook and in all."""

    profile: str
    rates: dict
    items: list[tuple[Work, float]]

    @property
    def seconds(self) -> float:
        return math.fsum(s for _, s in self.items)

    def by_run(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for w, s in self.items:
            if w.run:
                out[w.run] = out.get(w.run, 0.0) + s
        return out

    def by_notebook(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for w, s in sorted(self.items, key=lambda ws: ws[0].notebook):
            out[w.notebook] = out.get(w.notebook, 0.0) + s
        return out

    def by_what(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for w, s in self.items:
            out[w.what] = out.get(w.what, 0.0) + s
        return out


def _seconds(w: Work, rates: dict) -> float:
    t = w.images / rates[w.rate_key]
    floor = {"train": rates.get("step_floor_s"), "sample": rates.get("call_floor_s")}.get(w.unit)
    return max(t, w.calls * floor) if floor else t


def _predict(cost: StudyCost, rates: Mapping) -> Prediction:
    rates = check_rates(rates)
    return Prediction(cost.profile, rates, [(w, _seconds(w, rates)) for w in cost.work])


def predict(profile: str | config.Profile, rates: Mapping | str) -> Prediction:
    """Predicted time of a profile's study at `rates` (a rate set, or the name of a stated one): the
    work is counted at the sampling batch of the rate set's device. `.seconds` is the total."""
    rates = stated_rates(rates) if isinstance(rates, str) else check_rates(rates)
    return count(profile, rates["device"]).predict(rates)


# --------------------------------------------------------------------------- the table
def hms(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s"


def _pf(flops: float) -> str:
    return f"{flops / 1e15:.3f}" if flops >= 1e13 else f"{flops / 1e15:.2e}"


def markdown(profile: str, rate_sets: list[dict], device: str | None = None) -> str:
    """The cost model's tables for a profile: per run, per notebook, per kind of work, and the total,
    with the predicted time at each rate set."""
    prof = config.profile(profile)
    device = device or default_device(profile)
    cost = count(prof, device)
    preds = [predict(prof, r) for r in rate_sets]
    names = [r.get("name") or f"rates {i + 1}" for i, r in enumerate(rate_sets)]
    lines = [
        f"Cost model of profile `{prof.name}` (precision {prof.precision!r}): sampler calls counted at the "
        f"{device} sampling batch of {cost.sampling_batch}; training FLOPs = {TRAIN_FLOPS_PER_IMAGE} x "
        f"forward per image; Inception-v3 {INCEPTION_GFLOP} GFLOP per image; MNIST classifier "
        f"{classifier_mflops():.2f} MFLOP per image; times for one job on one device.",
        "",
        "| run | notebook | net (MFLOP/img) | T | epochs x images | steps | sampler calls | image-steps | "
        "classifier / Inception images | PFLOP | " + " | ".join(f"time, {n}" for n in names) + " |",
        "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(names),
    ]
    by_run = [p.by_run() for p in preds]
    for r in cost.runs:
        lines.append(
            f"| {r.label} | {r.notebook} | {r.net} ({r.mflops_per_image:.1f}) | {r.T} | "
            f"{r.epochs} x {r.train_images:,} | {r.steps:,} | {r.sampler_calls:,} | {r.image_steps:,} | "
            f"{r.classifier_images:,} / {r.inception_images:,} | {_pf(r.flops)} | "
            + " | ".join(hms(b[r.label]) for b in by_run)
            + " |"
        )
    shared = cost.shared
    lines.append(
        f"| reference and real-data features | {', '.join(sorted({w.notebook for w in shared}))} | | | | | | | "
        f"{sum(w.images for w in shared if w.net == 'classifier'):,} / "
        f"{sum(w.images for w in shared if w.net == 'inception'):,} | {_pf(sum(w.flops for w in shared))} | "
        + " | ".join(hms(sum(s for w, s in p.items if not w.run)) for p in preds)
        + " |"
    )
    total_steps = sum(r.steps for r in cost.runs)
    lines.append(
        f"| **total** | | | | | **{total_steps:,}** | **{sum(r.sampler_calls for r in cost.runs):,}** | "
        f"**{sum(r.image_steps for r in cost.runs):,}** | "
        f"**{sum(w.images for w in cost.work if w.net == 'classifier'):,} / "
        f"{sum(w.images for w in cost.work if w.net == 'inception'):,}** | **{_pf(cost.flops)}** | "
        + " | ".join(f"**{hms(p.seconds)}**" for p in preds)
        + " |"
    )
    lines += ["", "| notebook | PFLOP | " + " | ".join(f"time, {n}" for n in names) + " |"]
    lines.append("|---|---|" + "---|" * len(names))
    nb_pred = [p.by_notebook() for p in preds]
    for nb, flops in cost.by_notebook().items():
        lines.append(f"| {nb} | {_pf(flops)} | " + " | ".join(hms(b[nb]) for b in nb_pred) + " |")
    lines += ["", "| work | PFLOP | share | " + " | ".join(f"time, {n}" for n in names) + " |"]
    lines.append("|---|---|---|" + "---|" * len(names))
    what_pred = [p.by_what() for p in preds]
    for what, flops in sorted(cost.by_what().items(), key=lambda kv: -kv[1]):
        lines.append(
            f"| {what} | {_pf(flops)} | {100 * flops / cost.flops:.1f} % | "
            + " | ".join(hms(b[what]) for b in what_pred)
            + " |"
        )
    lines.append("")
    lines.append(
        f"Total: {cost.flops / 1e15:.2f} PFLOP; predicted "
        + "; ".join(f"{p.seconds / 60:,.1f} min at {n}" for p, n in zip(preds, names))
        + " (one job, one device, nothing else running)."
    )
    lines.append("")
    lines.append("Rate sets:")
    for n, p in zip(names, preds):
        r = p.rates
        keys = ", ".join(f"{k} {r[k]:,.0f}" for k in RATE_KEYS)
        floors = "".join(f", {k} {r[k]:g}" for k in RATE_FLOORS if r.get(k))
        lines.append(
            f"- {n} ({r['device']}, {r.get('precision', '?')}): {keys}{floors}. Source: {r.get('source', '?')}"
        )
    return "\n".join(lines)


def default_device(profile: str) -> str:
    """The device a profile is meant for (config.default_profile_name picks full where CUDA is)."""
    return "cuda" if profile == "full" else "cpu"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="The cost model's tables for a profile (helpers/cost.py).")
    ap.add_argument("--profile", required=True, choices=tuple(config.PROFILES))
    ap.add_argument(
        "--rates",
        action="append",
        help=f"a stated rate set ({', '.join(RATE_SETS)}) or a JSON file with the keys {', '.join(RATE_KEYS)} "
        "(and optionally device, precision, source, step_floor_s, call_floor_s); may be repeated "
        "(default: cpu-epyc-bf16 and h200-assumed)",
    )
    ap.add_argument("--device", choices=tuple(SAMPLING_BATCH), help="sampling batch of the table's counts")
    ap.add_argument("--json", type=Path, help="also write the counts as JSON here")
    args = ap.parse_args(argv)
    specs = args.rates or ["cpu-epyc-bf16", "h200-assumed"]
    try:
        rate_sets = [{**load_rates(s), "name": s if s in RATE_SETS else Path(s).stem} for s in specs]
    except ValueError as exc:
        ap.error(str(exc))
    print(markdown(args.profile, rate_sets, args.device))
    if args.json:
        args.json.write_text(json.dumps(count(args.profile, args.device or default_device(args.profile)).as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
