"""The small U-Net beside the seed's CNN: shapes, time input, size, training and sampling through the
engine for both model kinds, the configuration checks, and the CNN presets left exactly as they were."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from helpers import config, models, runs
from helpers.cold import ColdDiffusion
from helpers.data import training_images
from helpers.ddpm import DDPM
from helpers.training import ModelKind, TrainSettings

UNET_HIDDEN = (32, 64, 128)  # the "unet_wide" preset
STUDY_HIDDEN = (16, 32, 64)  # the study's "unet" and "columns_unet"


def _unet(seed: int = 0) -> models.UNet:
    torch.manual_seed(seed)
    return models.UNet(UNET_HIDDEN, "SiLU")


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 1, 28, 28), generator=torch.Generator().manual_seed(seed)) - 0.5


# --------------------------------------------------------------------------- the network
@pytest.mark.parametrize("n", [1, 5])
def test_unet_maps_images_to_images(n):
    net = _unet()
    with torch.no_grad():
        out = net(_images(n), torch.linspace(0, 1, n))
    assert out.shape == (n, 1, 28, 28) and torch.isfinite(out).all()


def test_unet_output_depends_on_time():
    net = _unet()
    x = _images(3)
    with torch.no_grad():
        a = net(x, torch.full((3,), 0.1))
        b = net(x, torch.full((3,), 0.9))
        again = net(x, torch.full((3,), 0.1))
    assert torch.equal(a, again)
    assert (a - b).abs().max() > 1e-4
    # every image gets its own time: changing one image's t changes only that image
    c = net(x, torch.tensor([0.1, 0.9, 0.1]))
    assert torch.allclose(c[[0, 2]], a[[0, 2]], atol=1e-6) and not torch.allclose(c[1], a[1], atol=1e-4)


def _hand_count_mflops(net: nn.Module) -> float:
    """2 x the multiply-adds of every Conv2d and Linear on one 28x28 image, counted with hooks."""
    total = []

    def conv(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        total.append(2 * out.numel() * k * m.in_channels // m.groups)

    def linear(m, inp, out):
        total.append(2 * out.numel() * m.in_features)

    hooks = [
        m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
        for m in net.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        net(torch.zeros(1, 1, 28, 28), torch.zeros(1))
    for h in hooks:
        h.remove()
    return sum(total) / 1e6


def test_describe_counts_parameters_and_flops_of_both_networks():
    unet = models.describe(_unet())
    cnn = models.describe(models.CNN((16, 32, 32, 16), "GELU"))
    assert unet["parameters"] == 600_705 and 500_000 < unet["parameters"] < 700_000
    assert cnn["parameters"] == 291_217
    assert 150 < unet["mflops_per_image"] < 300
    small = models.describe(models.UNet(STUDY_HIDDEN, "SiLU"))
    assert small["parameters"] == 179_969 and small["parameters"] < cnn["parameters"]
    assert small["mflops_per_image"] < cnn["mflops_per_image"] < unet["mflops_per_image"]
    # FlopCounterMode counts matrix products and convolutions: the hooks' hand count must agree
    assert unet["mflops_per_image"] == pytest.approx(_hand_count_mflops(_unet()), rel=1e-9)
    assert cnn["mflops_per_image"] == pytest.approx(_hand_count_mflops(models.CNN()), rel=1e-9)
    assert isinstance(unet["parameters"], int) and isinstance(unet["mflops_per_image"], float)


def _window(layers: list[tuple[int, int]]) -> int:
    """The receptive field by the textbook recurrence along the longest path: each layer (kernel,
    scale) with scale 2 for a 2 x 2 pooling, 1/2 for a x2 upsampling, 1 otherwise; a k-wide kernel
    widens the window by (k - 1) x the spacing of its input pixels in image pixels."""
    width, jump = 1, 1.0
    for kernel, scale in layers:
        width += (kernel - 1) * jump
        jump *= scale
    return int(width)


def test_describe_reports_kernels_resolutions_and_receptive_fields():
    import json

    cnn = models.describe(models.CNN((16, 32, 32, 16), "GELU"))
    assert [(c["kernel"], c["resolution"]) for c in cnn["convolutions"]] == [(7, 28)] * 4 + [(3, 28)]
    assert [c["in"] for c in cnn["convolutions"]] == [1, 16, 32, 32, 16] and cnn["resolutions"] == [28]
    # four 7x7 convolutions then a 3x3: 1 + 4 * 6 + 2 = 27, the four alone 25
    assert cnn["receptive_field"] == 1 + 4 * (7 - 1) + (3 - 1) == _window([(7, 1)] * 4 + [(3, 1)]) == 27
    assert _window([(7, 1)] * 4) == 25
    # pixel i of a 28-pixel side sees [i - 13, i + 13] cut to the image: never all 28 rows, a corner 14
    assert cnn["whole_image_pixels"] == 0 and cnn["output_pixels"] == 784
    assert (cnn["view_smallest"], cnn["view_largest"]) == (14, 27)
    assert cnn["norm_whole_map"] is True and cnn["time_frequencies"] == 16
    light = models.describe(models.CNN((16, 64, 16), "GELU"))  # three blocks: 1 + 3 * 6 + 2
    assert (light["receptive_field"], light["view_smallest"], light["whole_image_pixels"]) == (21, 11, 0)

    for hidden in (STUDY_HIDDEN, UNET_HIDDEN):
        unet = models.describe(models.UNet(hidden, "SiLU"))
        assert unet["resolutions"] == [28, 14, 7] and len(unet["convolutions"]) == 18
        assert {c["kernel"] for c in unet["convolutions"]} == {3, 1}
        # the longest path: input conv, two 3x3 at 28, pool, two at 14, pool, two at 7, up (x2) and a
        # 3x3, two at 14, up and a 3x3, two at 28, the output 3x3; the 1x1 skips widen nothing
        longest = [(3, 1)] * 3 + [(2, 2)] + [(3, 1)] * 2 + [(2, 2)] + [(3, 1)] * 2
        longest += [(1, 0.5), (3, 1), (3, 1), (3, 1), (1, 0.5), (3, 1), (3, 1), (3, 1), (3, 1)]
        assert unet["receptive_field"] == _window(longest) == 54
        # wider than the image, but the window's place depends on the pixel's position modulo 4: the
        # outer two rows (columns) on each side miss the far edge's last row, so 24 x 24 output pixels
        # see the whole image and a corner pixel 27 x 27 of it
        assert (unet["view_smallest"], unet["view_largest"]) == (27, 28)
        assert unet["whole_image_pixels"] == 24 * 24
        assert unet["norm_whole_map"] is True
    assert json.loads(json.dumps(unet)) == unet  # plain JSON: network_comparison saves it with the results


def test_the_receptive_field_probe_matches_each_pixels_dependence():
    """The probe's windows against a brute-force check on the real CNN without its normalisation:
    the gradient of one output pixel (float64, random weights) is non-zero exactly on its window."""
    torch.manual_seed(0)
    net = models.CNN((4, 4, 4, 4), "GELU").double()
    for block in net.blocks:
        block.net[1] = nn.Identity()  # the LayerNorm pools over the whole map: left out, as the probe does
    windows = models._windows(models._probe_copy(net), 28, list(range(28)))
    for i, j in [(0, 0), (0, 27), (5, 20), (13, 14), (27, 3)]:
        x = torch.randn(1, 1, 28, 28, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(net(x, torch.zeros(1, dtype=torch.float64))[0, 0, i, j], x)
        rows, cols = (grad[0, 0] != 0).any(1).nonzero().flatten(), (grad[0, 0] != 0).any(0).nonzero().flatten()
        assert (int(rows[0]), int(rows[-1])) == windows[i][:2] and (int(cols[0]), int(cols[-1])) == windows[j][2:]


# --------------------------------------------------------------------------- configuration
def test_presets_build_the_network_they_name():
    d, c = config.ddpm_preset("unet"), config.cold_preset("columns_unet")
    assert (d.net, d.hidden, d.T, d.betas, d.lr, d.batch_size) == ("unet", STUDY_HIDDEN, 1000, (1e-4, 0.02), 2e-4, 128)
    assert config.ddpm_preset("unet_wide") == d.replace(hidden=UNET_HIDDEN)
    main = dataclasses.replace(config.COLD_PRESETS["columns"], hidden=STUDY_HIDDEN, activation="SiLU", net="unet")
    assert c == main
    assert isinstance(DDPM(d).net, models.UNet) and isinstance(ColdDiffusion(c).net, models.UNet)
    assert all(p.net == "cnn" for name, p in config.DDPM_PRESETS.items() if not name.startswith("unet"))
    assert all(p.net == "cnn" for name, p in config.COLD_PRESETS.items() if name != "columns_unet")
    assert dataclasses.asdict(config.DDPMConfig())["net"] == "cnn"


@pytest.mark.parametrize("make", [config.DDPMConfig, config.ColdConfig])
@pytest.mark.parametrize("value", ["transformer", "UNet", True, None])
def test_unknown_net_is_refused_naming_the_field(make, value):
    with pytest.raises(ValueError) as err:
        make(net=value)
    assert str(err.value).startswith(f"net={value!r}") and "'cnn', 'unet'" in str(err.value)


@pytest.mark.parametrize("make", [config.DDPMConfig, config.ColdConfig])
@pytest.mark.parametrize("hidden", [(32, 64), (32, 64, 128, 256), (32, 64, 100), (16, 32, 32, 16), (4, 8, 12)])
def test_unet_refuses_hidden_it_cannot_build(make, hidden):
    with pytest.raises(ValueError) as err:
        make(net="unet", hidden=hidden)
    msg = str(err.value)
    assert msg.startswith(f"hidden={hidden!r}") and "net='unet'" in msg and "divisible by 8" in msg


def test_overrides_switch_the_network_and_are_checked():
    assert config.ddpm_preset("unet", hidden=(8, 16, 24)).hidden == (8, 16, 24)
    with pytest.raises(ValueError, match=r"^hidden=\(16, 32, 32, 16\).*net='unet'"):
        config.ddpm_preset("default", net="unet")
    with pytest.raises(ValueError, match=r"^hidden=\(32, 64\)"):
        runs.preset_config("cold", "columns_unet", {"hidden": [32, 64]})
    # the CNN keeps accepting any hidden tuple
    assert isinstance(models.network(config.ddpm_preset("unet", net="cnn")), models.CNN)


# --------------------------------------------------------------------------- the CNN unchanged
@pytest.mark.parametrize(
    "model", [lambda: DDPM(config.DDPM_PRESETS["default"]), lambda: ColdDiffusion(config.COLD_PRESETS["columns"])]
)
def test_cnn_presets_build_the_same_network_as_before(model):
    torch.manual_seed(7)
    net = model().net
    torch.manual_seed(7)
    ref = models.CNN((16, 32, 32, 16), "GELU")
    assert type(net) is models.CNN
    got, want = net.state_dict(), ref.state_dict()
    assert list(got) == list(want)
    assert all(got[k].shape == want[k].shape and torch.equal(got[k], want[k]) for k in want)
    x, t = _images(4, seed=3), torch.tensor([0.0, 0.3, 0.7, 1.0])
    with torch.no_grad():
        assert torch.equal(net(x, t), ref(x, t))


# --------------------------------------------------------------------------- training and sampling
def _fit(train_tiny, kind, cfg, grid: bool = True):
    # 64 images in batches of 32: two optimiser steps, then (with `grid`) the engine's own sample grid of 2
    settings = TrainSettings(epochs=1, sample_epochs=(1,) if grid else (), n_grid=2)
    return train_tiny(settings, kind=kind, cfg=cfg, label="unet", data=training_images(64))


def test_unet_ddpm_trains_and_samples(train_tiny):
    cfg = config.ddpm_preset("unet", T=4, batch_size=32)
    run = _fit(train_tiny, ModelKind(DDPM), cfg)
    assert isinstance(run.model.net, models.UNet)
    assert len(run.iter_loss) == 2 and all(0 < v < 10 for v in run.iter_loss)
    assert run.samples[1].shape == (2, 1, 28, 28)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    prince = run.model.sample(2, generator=g())
    ddim = run.model.sample(2, generator=g(), sampler="ddim", steps=2)
    assert prince.shape == ddim.shape == (2, 1, 28, 28)
    assert torch.isfinite(prince).all() and torch.isfinite(ddim).all()
    assert torch.equal(prince, run.model.sample(2, generator=g()))
    # the cached run loads back into a U-Net with the same weights
    again = _fit(train_tiny, ModelKind(DDPM), cfg)
    assert again.cached and all(torch.equal(v, again.model.state_dict()[k]) for k, v in run.model.state_dict().items())


def test_unet_cold_model_trains_and_samples(train_tiny):
    cfg = config.cold_preset("columns_unet", batch_size=32)
    # the study's builder: the prior of x_T fitted on the run's data; no grid (each costs T = 28 passes)
    run = _fit(train_tiny, runs.KINDS["cold"], cfg, grid=False)
    model = run.model
    assert isinstance(model.net, models.UNet) and model.T == 28 and model.prior_weight.sum() > 0
    assert len(run.iter_loss) == 2 and all(0 < v < 10 for v in run.iter_loss)
    # generation runs Algorithm 2 from the prior; reconstruction in one direct step
    generated = model.sample(2, generator=torch.Generator().manual_seed(5))
    assert generated.shape == (2, 1, 28, 28) and torch.isfinite(generated).all()
    assert (generated != model.sample_prior(2, torch.Generator().manual_seed(5))).any()
    rec = model.reconstruct(training_images(2), "direct")
    assert rec.shape == (2, 1, 28, 28) and torch.isfinite(rec).all()
