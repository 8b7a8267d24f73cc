"""Figures of the study. Every figure is written atomically under Plots/<profile>/."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns
import torch
from matplotlib.ticker import MaxNLocator

from . import config, store
from .data import to_unit_range
from .metrics import METRIC_LABELS

sns.set_theme(style="whitegrid", context="notebook")


def figure_path(profile: str, name: str, plots_dir: Path | None = None) -> Path:
    """Where `save` writes a figure: Plots/<profile>/<name>.png."""
    return Path(plots_dir or config.PLOTS_DIR) / profile / f"{name}.png"


def save(fig, profile: str, name: str, plots_dir: Path | None = None) -> None:
    """Save `fig` as `figure_path(profile, name)` through store.atomic_path, so a failed write keeps
    the old file. Returns None, so a notebook cell that ends with it shows the figure and nothing else."""
    with store.atomic_path(figure_path(profile, name, plots_dir)) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight")


def activations_figure(names=("GELU", "SELU")):
    from .models import activation

    x = torch.linspace(-4, 3, 400)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in names:
        ax.plot(x, activation(name)(x), label=name)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="x", ylabel="activation(x)", title=" vs ".join(names))
    ax.legend()
    return fig


def loss_figure(run, title: str = ""):
    """Loss at every iteration, with the mean of each epoch drawn at the epoch's last iteration."""
    it = run.iter_loss
    per_epoch = len(it) // max(len(run.epoch_loss), 1)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(range(1, len(it) + 1), it, lw=0.5, alpha=0.5, label="per iteration")
    ax.plot([per_epoch * (e + 1) for e in range(len(run.epoch_loss))], run.epoch_loss, "o-", label="epoch mean")
    ax.set(xlabel="iteration", ylabel="training loss", yscale="log", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    return fig


def image_grid(images: torch.Tensor, ncol: int = 8) -> torch.Tensor:
    """(N, 1, H, W) images in the model range -> one (H', W') array in [0, 1] with 2-pixel gaps."""
    from torchvision.utils import make_grid

    return make_grid(to_unit_range(images.float()), nrow=ncol, padding=2, pad_value=1.0)[0]


def samples_figure(samples: dict[int, torch.Tensor], title: str = "", ncol: int = 8):
    """One panel per epoch of the stored sample grids."""
    epochs = sorted(samples)
    # constrained layout gives the suptitle its own room above the panel titles
    fig, axes = plt.subplots(
        1, len(epochs), figsize=(3.2 * len(epochs), 2.0 + 0.2 * ncol / 4), squeeze=False, layout="constrained"
    )
    for ax, epoch in zip(axes[0], epochs):
        ax.imshow(image_grid(samples[epoch], ncol=ncol // 2), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"epoch {epoch}")
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig


def _epoch_axis(ax, epochs) -> None:
    """Whole-number epoch ticks, also when only one epoch is plotted (matplotlib would show 0.96 ...)."""
    if epochs:
        lo, hi = min(epochs), max(epochs)
        pad = max(0.5, 0.05 * (hi - lo))
        ax.set_xlim(lo - pad, hi + pad)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def metric_figure(runs: dict, metric: str, floor: float | None = None, title: str = "", floor_n: int | None = None):
    """A metric measured during training, against the epoch, one line per run.

    `runs` maps a label to a Run; `floor` draws the real-data value of the same metric, scored on
    `floor_n` images (named in the legend: FID's bias depends on n, so it should be the curve's n).
    """
    fig, ax = plt.subplots(figsize=(6, 3.5))
    all_epochs = [e for run in runs.values() for e in run.metrics]
    for label, run in runs.items():
        epochs = sorted(run.metrics)
        values = [run.metrics[e][metric] for e in epochs]
        (line,) = ax.plot(epochs, values, "o-", label=label)
        std_key = metric.replace("_mean", "_std")
        if std_key != metric and all(std_key in run.metrics[e] for e in epochs):
            std = [run.metrics[e][std_key] for e in epochs]
            ax.fill_between(
                epochs,
                [v - s for v, s in zip(values, std)],
                [v + s for v, s in zip(values, std)],
                color=line.get_color(),
                alpha=0.2,
            )
    if floor is not None:
        ax.axhline(
            floor, color="k", ls="--", lw=1, label="real data" + (f" (n = {floor_n})" if floor_n is not None else "")
        )
    n = next(iter(next(iter(runs.values())).metrics.values()), {}).get("n", "?")
    ax.set(
        xlabel="epoch",
        ylabel=METRIC_LABELS.get(metric, metric),
        title=title or f"{METRIC_LABELS.get(metric, metric)} per epoch ({n} samples)",
    )
    _epoch_axis(ax, all_epochs)
    ax.legend()
    return fig


def degradation_figure(degradations: dict, image: torch.Tensor, columns: int = 8):
    """One row per degradation (label -> Degradation): D(image, t) at `columns` evenly spaced t in 0..T."""
    rows = list(degradations.items())
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.3 * columns, 1.5 * len(rows)), squeeze=False)
    x = image.reshape(1, 1, 28, 28)
    for i, (label, d) in enumerate(rows):
        for j in range(columns):
            t = round(j * d.T / (columns - 1))
            ax = axes[i][j]
            ax.imshow(to_unit_range(d.degrade(x, t))[0, 0], cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"t = {t}/{d.T}", fontsize=8)
            ax.axis("off")
        axes[i][0].text(-3, 14, label, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig


def image_rows_figure(rows: dict[str, torch.Tensor], ncol: int = 8, title: str = ""):
    """Labelled rows of images (label -> (N, 1, 28, 28) in the model range), first `ncol` of each."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.1 * ncol, 1.3 * len(rows)), squeeze=False, layout="constrained")
    for ax, (label, images) in zip(axes[:, 0], rows.items()):
        ax.imshow(image_grid(images[:ncol], ncol), cmap="gray", vmin=0, vmax=1)
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig


def class_histogram_figure(results: dict[str, dict]):
    """Predicted-class shares of generated digits, one bar group per model (label -> metrics result)."""
    import pandas as pd

    frame = pd.DataFrame(
        [
            {"model": label, "digit": d, "share": c / max(sum(r["class_counts"]), 1)}
            for label, r in results.items()
            for d, c in enumerate(r["class_counts"])
        ]
    )
    fig, ax = plt.subplots(figsize=(8, 3.5))
    sns.barplot(frame, x="digit", y="share", hue="model", ax=ax)
    ax.axhline(0.1, color="k", ls="--", lw=1)
    ax.set(title="Digits the MNIST classifier sees in each sample (dashed: uniform)")
    return fig


def ddim_figure(sweep: dict):
    """FID (MNIST classifier) against the number of sampling steps (log axis), one line per eta, with
    the T-step ancestral sampler as a reference point; the seconds per sample label each point."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    rows = sweep["rows"]
    for eta in sorted({r["eta"] for r in rows if r["sampler"] == "ddim"}):
        pts = sorted((r for r in rows if r["sampler"] == "ddim" and r["eta"] == eta), key=lambda r: r["steps"])
        ax.errorbar(
            [r["steps"] for r in pts],
            [r["fid_classifier"] for r in pts],
            yerr=[r.get("fid_classifier_se") or 0 for r in pts],
            fmt="o-",
            capsize=3,
            label=f"DDIM, eta = {eta:g}",
        )
    for r in rows:
        if r["sampler"] == "prince":
            ax.errorbar(
                [r["steps"]],
                [r["fid_classifier"]],
                yerr=[r.get("fid_classifier_se") or 0],
                fmt="ks",
                capsize=3,
                label=f"ancestral (Prince 18.2), {r['steps']} steps",
            )
        ax.annotate(
            f"{r['seconds_per_sample']:.2g} s",
            (r["steps"], r["fid_classifier"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
    ax.set(
        xscale="log",
        xlabel="sampling steps",
        ylabel=METRIC_LABELS.get("fid_classifier", "FID"),
        title=f"FID against sampling steps ({sweep['n']} samples each; labels: time per sample)",
    )
    ax.legend(fontsize=8)
    return fig


def ema_figure(comparison: dict, metric: str = "fid_classifier"):
    """A per-epoch metric of the raw and the EMA weights of one run (the result of
    analyses.ema_comparison)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    per_epoch = comparison["per_epoch"]
    epochs = sorted(int(e) for e in per_epoch)
    for which, label in (("raw", "raw weights"), ("ema", f"EMA, decay {comparison['decay']:g}")):
        values = [per_epoch[e if e in per_epoch else str(e)][which][metric] for e in epochs]
        ax.plot(epochs, values, "o-", label=label)
    first = per_epoch[epochs[0] if epochs[0] in per_epoch else str(epochs[0])]["raw"]
    ax.set(
        xlabel="epoch",
        ylabel=METRIC_LABELS.get(metric, metric),
        title=f"{METRIC_LABELS.get(metric, metric)} per epoch, raw against EMA ({first.get('n', '?')} samples)",
    )
    _epoch_axis(ax, epochs)
    ax.legend()
    return fig


def network_samples_figure(runs: dict, comparison: dict):
    """Sample grids of the networks of `analyses.network_comparison` (label -> Run): each at the
    same number of steps where both stored a grid there, and each at the end of its run."""
    same = (comparison.get("same_steps") or {}).get("epoch")
    rows = {}
    for name, run in runs.items():
        net = comparison["networks"][name]
        label = "U-Net" if net["net"] == "unet" else "CNN"
        for epoch in sorted({e for e in (same, max(run.samples, default=None)) if e in run.samples}):
            rows[f"{name} ({label}), {epoch * net['steps_per_epoch']:,} steps"] = run.samples[epoch]
    return image_rows_figure(
        rows,
        title="Samples at the same number of steps and at the end of each run "
        "(the first 8 of each stored grid, the same noise)",
    )
