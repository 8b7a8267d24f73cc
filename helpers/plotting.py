"""Figures of the study. Every figure is written atomically under Plots/<profile>/."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns
import torch

from . import config
from .data import to_unit_range
from .metrics import METRIC_LABELS

sns.set_theme(style="whitegrid", context="notebook")


def save(fig, profile: str, name: str, plots_dir: Path | None = None) -> Path:
    """Save `fig` as Plots/<profile>/<name>.png via a temporary file, so a failed write keeps the old one."""
    folder = Path(plots_dir or config.PLOTS_DIR) / profile
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    tmp = folder / f".{name}.{os.getpid()}.tmp.png"
    try:
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
    ax.plot([per_epoch * (e + 1) for e in range(len(run.epoch_loss))], run.epoch_loss, "o-",
            label="epoch mean")
    ax.set(xlabel="iteration", ylabel="training loss", yscale="log", title=title)
    ax.legend()
    return fig


def image_grid(images: torch.Tensor, ncol: int = 8) -> torch.Tensor:
    """(N, 1, H, W) images in the model range -> one (H', W') array in [0, 1] with 2-pixel gaps."""
    from torchvision.utils import make_grid

    return make_grid(to_unit_range(images.float()), nrow=ncol, padding=2, pad_value=1.0)[0]


def samples_figure(samples: dict[int, torch.Tensor], title: str = "", ncol: int = 8):
    """One panel per epoch of the stored sample grids."""
    epochs = sorted(samples)
    fig, axes = plt.subplots(1, len(epochs), figsize=(3.2 * len(epochs), 2.0 + 0.2 * ncol / 4),
                             squeeze=False)
    for ax, epoch in zip(axes[0], epochs):
        ax.imshow(image_grid(samples[epoch], ncol=ncol // 2), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"epoch {epoch}")
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig




def metric_figure(runs: dict, metric: str, floor: float | None = None, title: str = ""):
    """A metric measured during training, against the epoch, one line per run.

    `runs` maps a label to a Run; `floor` draws the real-data value of the same metric.
    """
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, run in runs.items():
        epochs = sorted(run.metrics)
        values = [run.metrics[e][metric] for e in epochs]
        line, = ax.plot(epochs, values, "o-", label=label)
        std_key = metric.replace("_mean", "_std")
        if std_key != metric and all(std_key in run.metrics[e] for e in epochs):
            std = [run.metrics[e][std_key] for e in epochs]
            ax.fill_between(epochs, [v - s for v, s in zip(values, std)],
                            [v + s for v, s in zip(values, std)], color=line.get_color(), alpha=0.2)
    if floor is not None:
        ax.axhline(floor, color="k", ls="--", lw=1, label="real data")
    n = next(iter(next(iter(runs.values())).metrics.values()), {}).get("n", "?")
    ax.set(xlabel="epoch", ylabel=METRIC_LABELS.get(metric, metric),
           title=title or f"{METRIC_LABELS.get(metric, metric)} per epoch ({n} samples)")
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


def degradation_slider(degradation, images: torch.Tensor, ncol: int = 8):
    """An ipywidgets slider that steps a batch of images through D(x, t), t = 0..T."""
    import ipywidgets as widgets
    from IPython.display import display

    out = widgets.Output()
    slider = widgets.IntSlider(value=degradation.T // 2, min=0, max=degradation.T, description="t")

    def show(change=None):
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(1.2 * ncol, 1.3 * ((len(images) + ncol - 1) // ncol)))
            ax.imshow(image_grid(degradation.degrade(images, slider.value), ncol), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"D(x, {slider.value}) of {degradation.T}")
            ax.axis("off")
            plt.show()

    slider.observe(show, names="value")
    show()
    box = widgets.VBox([slider, out])
    display(box)
    return box


def image_rows_figure(rows: dict[str, torch.Tensor], ncol: int = 8, title: str = ""):
    """Labelled rows of images (label -> (N, 1, 28, 28) in the model range), first `ncol` of each."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.1 * ncol, 1.3 * len(rows)), squeeze=False)
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

    frame = pd.DataFrame([
        {"model": label, "digit": d, "share": c / max(sum(r["class_counts"]), 1)}
        for label, r in results.items() for d, c in enumerate(r["class_counts"])])
    fig, ax = plt.subplots(figsize=(8, 3.5))
    sns.barplot(frame, x="digit", y="share", hue="model", ax=ax)
    ax.axhline(0.1, color="k", ls="--", lw=1)
    ax.set(title="Digits the MNIST classifier sees in each sample (dashed: uniform)")
    return fig
