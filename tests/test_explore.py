"""The explorers without a kernel: frames follow t and the choices, the slider follows T, and a model's
reconstructions appear exactly when a model of the chosen configuration exists."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import explore
from helpers.cold import ColdDiffusion
from helpers.config import ColdConfig
from helpers.ddpm import DDPM, GaussianNoising
from helpers.degradations import RowColumnAveraging


def digits(n=4):
    return torch.rand((n, 1, 28, 28), generator=torch.Generator().manual_seed(0)) - 0.5


def pixels(frame):
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(frame.png))).copy())


@pytest.fixture(scope="module")
def tiny(tiny_cold_config):
    torch.manual_seed(0)
    return ColdDiffusion(tiny_cold_config).eval()


def test_frame_is_the_degradation_at_t_and_its_png_shows_it():
    x = digits()
    f = explore.degradation_frame(x, ColdConfig(axis="rows", group=4, schedule="outside-in"), 3)
    op = RowColumnAveraging("rows", 4, "outside-in")
    assert list(f.rows) == ["D(x, t)"] and torch.equal(f.rows["D(x, t)"], op.degrade(x, 3))
    assert f.label.startswith("t = 3 of T = 7 · rows, 7 steps, outside-in")
    assert "no trained model" in f.label
    img = Image.open(io.BytesIO(f.png))
    assert img.format == "PNG" and img.size == ((4 * 30 + 2) * explore.SCALE, 30 * explore.SCALE + 2 * explore.SCALE)
    # The PNG's pixels are the grid's, scaled up: its top-left image pixel is x + 0.5 of the first digit.
    first = (op.degrade(x, 3)[0, 0, 0, 0] + 0.5).clamp(0, 1) * 255
    assert abs(img.getpixel((2 * explore.SCALE, 2 * explore.SCALE)) - first.item()) <= 0.5


def test_moving_t_or_a_choice_changes_image_and_label():
    e = explore.DegradationExplorer(digits())
    base = e.frame("columns", 1, "random", 10)
    for other in (
        e.frame("columns", 1, "random", 11),
        e.frame("rows", 1, "random", 10),
        e.frame("columns", 4, "random", 5),
        e.frame("columns", 1, "inside-out", 10),
    ):
        assert other.label != base.label
        assert other.png != base.png and not torch.equal(pixels(other), pixels(base))
    assert e.frame("columns", 1, "random", 0).png == e.frame("rows", 4, "inside-out", 0).png  # t = 0: x


def test_reconstructions_appear_only_when_a_model_of_that_configuration_exists(tiny, tiny_cold_config):
    asked = []

    def find(cfg):
        asked.append(cfg)
        return tiny if cfg == tiny_cold_config else None

    e = explore.DegradationExplorer(digits(), find, base=tiny_cold_config)
    with_model = e.frame("columns", 1, "random", 9)
    assert list(with_model.rows) == ["D(x, t)", "direct R(D(x, t), t)", "Algorithm 2 from t"]
    z = tiny.degradation.degrade(digits(), 9)
    assert torch.allclose(with_model.rows["direct R(D(x, t), t)"], tiny.restore(z, torch.full((4,), 9)))
    assert torch.allclose(with_model.rows["Algorithm 2 from t"], tiny.sample_from(z, "algorithm2", start=9))
    assert "Algorithm 2 from t" in with_model.label and "no trained model" not in with_model.label
    without = e.frame("rows", 1, "random", 9)  # no model of rows: D(x, t) only
    assert list(without.rows) == ["D(x, t)"] and "no trained model" in without.label
    e.frame("columns", 1, "random", 3)
    assert asked == [tiny_cold_config, tiny_cold_config.replace(axis="rows")]  # each configuration looked up once
    assert list(explore.DegradationExplorer(digits()).frame("columns", 1, "random", 9).rows) == ["D(x, t)"]


def test_a_model_of_another_configuration_is_refused(tiny, tiny_cold_config):
    with pytest.raises(ValueError, match="model is trained for"):
        explore.degradation_frame(digits(), tiny_cold_config.replace(axis="rows"), 2, tiny)


def test_slider_range_follows_T_and_the_widget_follows_the_slider(tiny, tiny_cold_config):
    e = explore.DegradationExplorer(
        digits(), lambda cfg: tiny if cfg == tiny_cold_config else None, base=tiny_cold_config
    )
    box = e.widget(t=14)
    axis, group, schedule = box.children[:3]
    assert (box.slider.min, box.slider.max, box.slider.value) == (0, 28, 14)
    assert box.readout.value == e.frame("columns", 1, "random", 14).label
    assert box.image.value == e.frame("columns", 1, "random", 14).png
    box.slider.value = 20
    assert (
        box.readout.value.startswith("t = 20 of T = 28") and box.image.value == e.frame("columns", 1, "random", 20).png
    )
    group.value = 4  # 7 bands: T = 7, the slider keeps the same fraction of T
    assert (box.slider.max, box.slider.value) == (7, 5)
    assert box.readout.value == e.frame("columns", 4, "random", 5).label
    group.value = 1
    assert (box.slider.max, box.slider.value) == (28, 20)
    axis.value = "rows"
    assert box.readout.value.startswith("t = 20 of T = 28 · rows") and "no trained model" in box.readout.value
    assert "live kernel" in repr(box)
    with pytest.raises(ValueError, match=r"t=29 is not allowed; expected an integer step in 0\.\.28"):
        e.widget(t=29)
    with pytest.raises(ValueError, match="axis='diagonal' is not allowed"):
        e.frame("diagonal", 1, "random", 0)


def test_ddpm_frames_follow_t_and_show_the_reverse_trajectory(tiny_ddpm_config):
    torch.manual_seed(0)
    model = DDPM(tiny_ddpm_config).eval()  # T = 20
    x = digits()
    e = explore.DDPMExplorer(x, model, seed=3)
    f5, f6 = e.frame(5), e.frame(6)
    assert list(f5.rows) == ["forward z_t of test digits", "reverse z_t of a sample"]
    assert f5.png != f6.png and f5.label.startswith("t = 5 of T = 20") and f6.label.startswith("t = 6 of T = 20")
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    a = model.noising.alpha[5]
    assert torch.allclose(f5.rows["forward z_t of test digits"], a.sqrt() * x + (1 - a).sqrt() * eps, atol=1e-6)
    assert torch.equal(e.frame(0).rows["forward z_t of test digits"], x)
    # The trajectory is the sampler's own: its z_0 is what model.sample returns from the same seed.
    z0 = model.sample(4, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(e.frame(0).rows["reverse z_t of a sample"], z0)
    box = e.widget()
    assert (box.slider.max, box.slider.value) == (20, 20)
    before = box.image.value
    box.slider.value = 7
    assert box.image.value != before and box.readout.value == e.frame(7).label
    with pytest.raises(ValueError, match=r"t=21 is not allowed"):
        e.frame(21)


def test_ddpm_explorer_without_a_model_shows_the_forward_process_only():
    e = explore.DDPMExplorer(digits(), noising=GaussianNoising(10, 1e-4, 0.02))
    assert list(e.frame(4).rows) == ["forward z_t of test digits"] and "no trained model" in e.frame(4).label
    with pytest.raises(ValueError, match="`model`.*`noising`"):
        explore.DDPMExplorer(digits())


def test_static_figures_show_fixed_steps(tiny, tiny_cold_config):
    import matplotlib.pyplot as plt

    fig = explore.DegradationExplorer(digits(), lambda cfg: tiny, base=tiny_cold_config).figure(steps=5)
    assert [ax.get_title() for ax in fig.axes] == [f"t = {t} of T = 28" for t in (0, 7, 14, 21, 28)]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
        "D(x, t)",
        "direct R(D(x, t), t)",
        "Algorithm 2 from t",
    ]
    plt.close(fig)
    fig = explore.DDPMExplorer(digits(), noising=GaussianNoising(10, 1e-4, 0.02)).figure(steps=3)
    assert [ax.get_title() for ax in fig.axes] == ["t = 0 of T = 10", "t = 5 of T = 10", "t = 10 of T = 10"]
    plt.close(fig)
