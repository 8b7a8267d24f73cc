import math

import pytest
import torch

from helpers import config
from helpers.ddpm import DDPM, GaussianNoising, sample_ddim, sample_prince
from helpers.models import CNN


def test_schedule_endpoints_and_closed_form():
    n = GaussianNoising(1000, 1e-4, 0.02)
    assert n.beta[0].item() == pytest.approx(1e-4)
    assert n.beta[1].item() == pytest.approx(1e-4 + (0.02 - 1e-4) / 1000)
    assert n.beta[1000].item() == pytest.approx(0.02)
    assert n.alpha[0].item() == 1.0
    for t in (1, 10, 500, 1000):
        closed = math.prod(1 - (1e-4 + (0.02 - 1e-4) * s / 1000) for s in range(1, t + 1))
        assert n.alpha[t].item() == pytest.approx(closed, rel=1e-5)
    assert n.alpha[1000].item() < 1e-4  # z_T is essentially pure noise


def test_forward_process_mean_and_variance():
    n = GaussianNoising(1000, 1e-4, 0.02)
    x = torch.rand(1, 1, 28, 28) - 0.5
    for t in (1, 250, 1000):
        z = n.degrade(x.expand(20000, -1, -1, -1), torch.full((20000,), t))
        a = n.alpha[t]
        assert torch.allclose(z.mean(0), a.sqrt() * x[0], atol=0.03)
        assert torch.allclose(z.var(0), (1 - a).expand(1, 28, 28), rtol=0.06)


@pytest.mark.parametrize("T", [1000, 100])
def test_sampler_with_oracle_predictor_returns_the_single_image(T):
    """For a data set of one image x0 the ideal noise predictor is (z - sqrt(a) x0) / sqrt(1 - a)."""
    n = GaussianNoising(T, 1e-4, 0.02)
    x0 = torch.rand(1, 1, 28, 28) - 0.5

    def oracle(z, t):
        a = n.alpha[t].view(-1, 1, 1, 1)
        return (z - a.sqrt() * x0) / (1 - a).sqrt()

    out = sample_prince(n, oracle, torch.randn(8, 1, 28, 28), torch.Generator().manual_seed(1))
    assert torch.allclose(out, x0.expand_as(out), atol=1e-4)


def test_sampler_with_wrong_predictor_does_not_return_the_image():
    n = GaussianNoising(100, 1e-4, 0.02)
    x0 = torch.rand(1, 1, 28, 28) - 0.5
    out = sample_prince(n, lambda z, t: torch.zeros_like(z), torch.randn(4, 1, 28, 28))
    assert (out - x0).abs().max() > 0.5


@pytest.mark.parametrize("preset", sorted(config.DDPM_PRESETS))
def test_output_shapes_for_every_preset(preset):
    cfg = config.ddpm_preset(preset)
    model = DDPM(cfg)
    x = torch.rand(3, 1, 28, 28) - 0.5
    t = torch.tensor([1, cfg.T // 2, cfg.T])
    assert model.eps(x, t).shape == x.shape
    loss = model.loss(x)
    assert loss.shape == () and torch.isfinite(loss)


@pytest.mark.parametrize("act", config.ACTIVATIONS)
def test_output_shapes_for_every_activation(act):
    net = CNN((8, 16), act)
    assert net(torch.randn(2, 1, 28, 28), torch.rand(2)).shape == (2, 1, 28, 28)


def test_time_embedding_changes_the_output():
    net = CNN((8, 8), "GELU")
    x = torch.randn(1, 1, 28, 28).expand(2, -1, -1, -1)
    out = net(x, torch.tensor([0.1, 0.9]))
    assert not torch.allclose(out[0], out[1])


def test_training_steps_draw_t_from_1_to_T():
    cfg = config.DDPMConfig(T=5, hidden=(4,))
    model = DDPM(cfg)
    seen = []
    model.eps = lambda z, t: (seen.append(t.clone()), torch.zeros_like(z))[1]
    for _ in range(50):
        model.loss(torch.zeros(64, 1, 28, 28))
    ts = torch.cat(seen)
    assert set(ts.tolist()) == {1, 2, 3, 4, 5}


def test_sampler_matches_algorithm_18_2_written_out():
    """Pins the numbers: the loop (with or without `keep`) equals the algorithm step by step."""
    n = GaussianNoising(5, 0.1, 0.3)
    eps_model = lambda z, t: 0.5 * z + t.view(-1, 1, 1, 1) / 10  # noqa: E731
    z_T = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    z, expected = z_T, {5: z_T}
    for t in range(5, 0, -1):
        beta, alpha = n.beta[t], n.alpha[t]
        z = (z - beta / (1 - alpha).sqrt() * eps_model(z, torch.full((3,), t))) / (1 - beta).sqrt()
        if t > 1:
            z = z + beta.sqrt() * torch.randn(z.shape, generator=gen)
        expected[t - 1] = z
    assert torch.equal(sample_prince(n, eps_model, z_T, torch.Generator().manual_seed(1)), z)
    out, states = sample_prince(n, eps_model, z_T, torch.Generator().manual_seed(1), keep=[5, 3, 0])
    assert torch.equal(out, z) and sorted(states) == [0, 3, 5]
    for t in states:
        assert torch.equal(states[t], expected[t])


def test_default_sample_is_prince_and_sampler_options_reach_ddim():
    model = DDPM(config.DDPMConfig(T=10, hidden=(4,)))
    gen = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    z_T = torch.randn((2, 1, 28, 28), generator=gen())
    prince = model.sample(2, gen())
    g = gen()
    torch.randn((2, 1, 28, 28), generator=g)
    assert torch.equal(prince, sample_prince(model.noising, model.eps, z_T, g))
    ddim = model.sample(2, gen(), sampler="ddim", steps=3, spacing="quadratic")
    assert torch.equal(ddim, sample_ddim(model.noising, model.eps, z_T, 3, 0.0, "quadratic"))
    assert not torch.allclose(ddim, prince)
