"""Interactive explorers for JupyterLab: step through a degradation, and through a DDPM's noising.

The logic is plain functions of (choices, t) that return a `Frame`: the PNG bytes of an image grid
(one row per kind of image) and a readout text. Tests call them without a kernel. The ipywidgets
wrappers (which need no kernel to be built either) only wire a slider and dropdowns to them and put the PNG into an `ipywidgets.Image` in
place, which is fast enough to follow a dragged slider (no matplotlib figure is rebuilt per step).
Each explorer also draws a static matplotlib figure at fixed steps for headless (papermill) runs.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterable

import ipywidgets as widgets
import torch

from . import config
from .cold import ColdDiffusion
from .config import ColdConfig
from .data import to_unit_range
from .degradations import AXES, SCHEDULES, RowColumnAveraging

SCALE = 3  # screen pixels per MNIST pixel in the explorers' images
GROUPS = {"28 steps (single lines)": 1, "7 steps (bands of 4)": 4}

FindModel = Callable[[ColdConfig], "ColdDiffusion | None"]


@dataclasses.dataclass(frozen=True)
class Frame:
    """What an explorer shows at one setting: labelled rows of images, the PNG of their grid, a readout."""

    rows: dict[str, torch.Tensor]  # label -> (n, 1, 28, 28) in the model range, on the CPU
    label: str

    @property
    def grid(self) -> torch.Tensor:
        """(H, W) in [0, 1]: one row of the grid per entry of `rows`, 2-pixel white gaps."""
        from torchvision.utils import make_grid

        images = torch.cat(list(self.rows.values()))
        n = next(iter(self.rows.values())).shape[0]
        return make_grid(to_unit_range(images.float()), nrow=n, padding=2, pad_value=1.0)[0]

    @property
    def png(self) -> bytes:
        from torchvision.io import encode_png

        pixels = (self.grid * 255).round().to(torch.uint8)
        pixels = pixels.repeat_interleave(SCALE, 0).repeat_interleave(SCALE, 1)
        return encode_png(pixels[None]).numpy().tobytes()


def _inference_view(model: torch.nn.Module) -> torch.nn.Module:
    """The model to sample from: the caller's own when it is in eval mode (as the engine hands models
    out), else a copy in eval mode. An explorer never moves, retypes or switches the caller's model."""
    if not any(m.training for m in model.modules()):
        return model
    return copy.deepcopy(model).eval()


def _check_step(t, T: int) -> int:
    config.check_int("t", t, 0, T, allowed=f"an integer step in 0..{T}")
    return t


# --------------------------------------------------------------------------- cold diffusion
def cold_config(base: ColdConfig, axis: str, group: int, schedule: str) -> ColdConfig:
    """The configuration of one set of choices: `base` (the notebook's preset) with them replaced."""
    return base.replace(axis=axis, group=group, schedule=schedule)  # validates, naming a bad choice


@torch.no_grad()
def degradation_frame(images: torch.Tensor, cfg: ColdConfig, t: int, model: ColdDiffusion | None = None) -> Frame:
    """D(x, t) of `images` under `cfg` and, when a trained `model` of that configuration is given, its
    direct reconstruction R(D(x, t), t) and its Algorithm 2 restoration started from step t."""
    if model is not None and model.cfg != cfg:
        raise ValueError(f"model is trained for {model.cfg}, not for the chosen {cfg}")
    op = (
        model.degradation
        if model is not None
        else RowColumnAveraging(cfg.axis, cfg.group, cfg.schedule, cfg.schedule_seed)
    )
    t = _check_step(t, op.T)
    dev = op.order.device
    z = op.degrade(images.to(dev), t)
    rows = {"D(x, t)": z}
    if model is not None:
        rows["direct R(D(x, t), t)"] = model.sample_from(z, "direct", start=t)
        rows["Algorithm 2 from t"] = model.sample_from(z, "algorithm2", start=t)
    shown = " | ".join(rows) if model is not None else "D(x, t) only (no trained model of this configuration)"
    label = f"t = {t} of T = {op.T} · {cfg.axis}, {op.T} steps, {cfg.schedule} · rows: {shown}"
    return Frame({k: v.float().cpu() for k, v in rows.items()}, label)


class DegradationExplorer:
    """Row/column averaging of a few test digits under any axis, grouping and schedule, with the
    reconstructions of a trained model when `find_model(cfg)` returns one (None: not trained)."""

    def __init__(self, images: torch.Tensor, find_model: FindModel | None = None, base: ColdConfig = ColdConfig()):
        self.images, self.base = images, base
        self.find_model = find_model or (lambda cfg: None)
        self._models: dict[ColdConfig, ColdDiffusion | None] = {}

    def config(self, axis: str, group: int, schedule: str) -> ColdConfig:
        return cold_config(self.base, axis, group, schedule)

    def model(self, cfg: ColdConfig) -> ColdDiffusion | None:
        """The trained model of `cfg`, looked up once (a lookup may load a checkpoint)."""
        if cfg not in self._models:
            model = self.find_model(cfg)
            self._models[cfg] = None if model is None else _inference_view(model)
        return self._models[cfg]

    def frame(self, axis: str, group: int, schedule: str, t: int) -> Frame:
        cfg = self.config(axis, group, schedule)
        return degradation_frame(self.images, cfg, t, self.model(cfg))

    def figure(self, steps: int = 5):
        """A static figure of the base configuration at `steps` evenly spaced t (headless runs)."""
        cfg = self.base
        T = cfg.T
        return frames_figure(
            [self.frame(cfg.axis, cfg.group, cfg.schedule, round(j * T / (steps - 1))) for j in range(steps)],
            f"cold diffusion, {cfg.axis}, T = {T}, {cfg.schedule}",
        )

    def widget(self, t: int | None = None) -> ExplorerBox:
        """The live explorer: dropdowns for the choices, a slider over t = 0..T, the image, a readout."""
        b = self.base
        axis = widgets.Dropdown(options=list(AXES), value=b.axis, description="axis")
        group = widgets.Dropdown(options=list(GROUPS.items()), value=b.group, description="grouping")
        schedule = widgets.Dropdown(options=list(SCHEDULES), value=b.schedule, description="schedule")
        choices = lambda: (axis.value, group.value, schedule.value)  # noqa: E731
        slider = widgets.IntSlider(
            value=b.T // 2 if t is None else _check_step(t, b.T),
            min=0,
            max=b.T,
            description="t",
            continuous_update=True,
        )
        box = ExplorerBox(
            "degradation explorer", slider, lambda: self.frame(*choices(), slider.value), [axis, group, schedule]
        )

        def resize(_):
            # Keep the same fraction of T; move value and max in the order that never clamps the value.
            T_old, T_new = slider.max, self.config(*choices()).T
            value = round(slider.value * T_new / T_old)
            with box.paused():
                if T_new >= T_old:
                    slider.max, slider.value = T_new, value
                else:
                    slider.value, slider.max = value, T_new
            box.show()

        for w in (axis, group, schedule):
            w.observe(resize, names="value")
        return box


# --------------------------------------------------------------------------- DDPM
class DDPMExplorer:
    """The forward noising z_t of a few digits (one fixed noise draw) and, for a trained model, the
    reverse trajectory of a fixed sample at the same t (computed once; the slider only indexes it)."""

    def __init__(self, images: torch.Tensor, model=None, noising=None, seed: int = 0, n: int | None = None):
        if model is None and noising is None:
            raise ValueError("give a trained DDPM `model` or, without one, its `noising` process")
        # A CPU copy of the schedule for the forward rows: the model's own buffers stay where they are
        # (nn.Module.cpu() moves a module in place, and the sampler below needs them on its device).
        self.noising = copy.deepcopy(model.noising if model is not None else noising).cpu()
        self.images = images.float().cpu()
        self.eps = torch.randn(self.images.shape, generator=torch.Generator().manual_seed(seed))
        self.trajectory: dict[int, torch.Tensor] | None = None
        if model is not None:
            dev = model.noising.beta.device
            _, states = _inference_view(model).sample(
                n or len(images), generator=torch.Generator(dev).manual_seed(seed), keep=range(self.T + 1)
            )
            self.trajectory = {t: z.float().cpu() for t, z in states.items()}

    @property
    def T(self) -> int:
        return self.noising.T

    @torch.no_grad()
    def frame(self, t: int) -> Frame:
        t = _check_step(t, self.T)
        steps = torch.full((len(self.images),), t, dtype=torch.long)
        rows = {"forward z_t of test digits": self.noising.degrade(self.images, steps, self.eps)}
        if self.trajectory is not None:
            rows["reverse z_t of a sample"] = self.trajectory[t]
        shown = " | ".join(rows) if self.trajectory is not None else "forward z_t only (no trained model)"
        return Frame(rows, f"t = {t} of T = {self.T} · rows: {shown} · shown as z_t + 0.5 clipped to [0, 1]")

    def figure(self, steps: int = 6):
        ts = [round(j * self.T / (steps - 1)) for j in range(steps)]
        return frames_figure([self.frame(t) for t in ts], f"DDPM, T = {self.T}")

    def widget(self, t: int | None = None) -> ExplorerBox:
        slider = widgets.IntSlider(
            value=self.T if t is None else _check_step(t, self.T),
            min=0,
            max=self.T,
            description="t",
            continuous_update=True,
        )
        return ExplorerBox("DDPM explorer", slider, lambda: self.frame(slider.value))


# --------------------------------------------------------------------------- shared pieces
def frames_figure(frames: Iterable[Frame], title: str = ""):
    """Frames side by side, one panel per step, titled with the step (the headless fallback)."""
    import matplotlib.pyplot as plt

    frames = list(frames)
    n_rows, (h, w) = len(frames[0].rows), frames[0].grid.shape
    width = 2.8  # inches per panel; the height follows the grid's aspect, plus room for the titles
    fig, axes = plt.subplots(
        1, len(frames), figsize=(width * len(frames) + 1.2, width * h / w + 0.8), squeeze=False, layout="constrained"
    )
    for ax, f in zip(axes[0], frames):
        ax.imshow(f.grid.numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f.label.split(" · ")[0], fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].set_yticks(
        [(i + 0.5) * frames[0].grid.shape[0] / n_rows for i in range(n_rows)], list(frames[0].rows), fontsize=8
    )
    if title:
        fig.suptitle(title)
    return fig


class ExplorerBox(widgets.VBox):
    """Controls, slider, readout and image. Its plain-text form (what a headless copy of the notebook
    shows in place of the widget) says that it needs a live kernel."""

    def __init__(self, name: str, slider: widgets.IntSlider, render: Callable[[], Frame], controls=()):
        self.name, self.slider, self._render, self._paused = name, slider, render, False
        self.readout = widgets.Label()
        self.image = widgets.Image(format="png")
        super().__init__([*controls, slider, self.readout, self.image])
        slider.observe(lambda _: self._paused or self.show(), names="value")
        self.show()

    def show(self) -> Frame:
        frame = self._render()
        self.image.value, self.readout.value = frame.png, frame.label
        return frame

    @contextlib.contextmanager
    def paused(self):
        """Moving the slider inside this block renders nothing (several changes, one render after)."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def __repr__(self) -> str:
        return f"{self.name}: run this notebook in JupyterLab with a live kernel to use it"
