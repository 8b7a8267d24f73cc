"""Figures of the study. Every figure is written atomically under Plots/<profile>/."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns
import torch

from . import config
from .data import to_unit_range

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


METRIC_TITLES = {
    "fid_classifier": "FID (MNIST classifier)",
    "is_classifier_mean": "IS (MNIST classifier)",
    "kid_classifier_mean": "KID (MNIST classifier)",
}


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
    ax.set(xlabel="epoch", ylabel=METRIC_TITLES.get(metric, metric),
           title=title or f"{METRIC_TITLES.get(metric, metric)} per epoch ({n} samples)")
    ax.legend()
    return fig
