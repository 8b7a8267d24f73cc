"""DDIM sampler, its schedule, intermediate states (`keep`) and sampler options of DDPM.sample."""

import math

import pytest
import torch

from helpers import config
from helpers.ddpm import DDPM, GaussianNoising, ddim_schedule, sample_ddim, sample_prince

T = 1000


@pytest.fixture(scope="module")
def noising():
    return GaussianNoising(T, 1e-4, 0.02)


def oracle_for(noising, x0):
    """The exact noise that maps x0 to z at step t: the ideal predictor for a one-image data set."""

    def eps(z, t):
        a = noising.alpha[t].view(-1, 1, 1, 1)
        return (z - a.sqrt() * x0) / (1 - a).sqrt()

    return eps


def tiny_ddpm(T=20):
    torch.manual_seed(0)
    return DDPM(config.DDPMConfig(T=T, hidden=(4, 4)))


@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
@pytest.mark.parametrize("steps", [1, 7, 50, T])
def test_oracle_predictor_returns_the_single_image(noising, steps, spacing):
    x0 = torch.rand(1, 1, 28, 28) - 0.5
    out = sample_ddim(noising, oracle_for(noising, x0), torch.randn(4, 1, 28, 28), steps, 0.0, spacing)
    assert torch.allclose(out, x0.expand_as(out), atol=1e-4)


def test_wrong_predictor_does_not_return_the_image(noising):
    x0 = torch.rand(1, 1, 28, 28) - 0.5
    out = sample_ddim(noising, lambda z, t: torch.zeros_like(z), torch.randn(4, 1, 28, 28), 10)
    assert (out - x0).abs().max() > 0.5


@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
@pytest.mark.parametrize("steps", [1, 2, 7, 10, 333, 999, T])
def test_schedule_is_a_strictly_increasing_subsequence_ending_at_T(noising, steps, spacing):
    taus, sigmas = ddim_schedule(noising, steps, 0.0, spacing)
    assert len(taus) == steps and taus[-1] == T and taus[0] >= 1
    assert all(a < b for a, b in zip(taus, taus[1:]))
    assert sigmas == [0.0] * steps


def test_schedule_known_values(noising):
    assert ddim_schedule(noising, 10)[0] == list(range(100, 1001, 100))
    assert ddim_schedule(noising, 4, spacing="quadratic")[0] == [63, 251, 563, 1000]
    assert ddim_schedule(noising, T)[0] == list(range(1, T + 1))
    # quadratic spacing puts more steps near t = 0 than uniform spacing
    assert sum(t <= 250 for t in ddim_schedule(noising, 20, spacing="quadratic")[0]) == 9
    assert sum(t <= 250 for t in ddim_schedule(noising, 20, spacing="uniform")[0]) == 5


def test_eta_zero_is_deterministic_given_z_T():
    model = tiny_ddpm()
    z = torch.randn(3, 1, 28, 28)
    a = sample_ddim(model.noising, model.eps, z, 5, generator=torch.Generator().manual_seed(1))
    b = sample_ddim(model.noising, model.eps, z, 5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = sample_ddim(model.noising, model.eps, z, 5, eta=0.5, generator=torch.Generator().manual_seed(1))
    d = sample_ddim(model.noising, model.eps, z, 5, eta=0.5, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(c, d)


def test_eta_one_with_every_step_has_the_ddpm_posterior_std(noising):
    taus, sigmas = ddim_schedule(noising, T, 1.0)
    beta = noising.beta.double()
    alpha = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.float64), 1 - beta[1:]]), 0)
    assert taus == list(range(1, T + 1))
    assert sigmas[0] == 0.0  # the step to t = 0 adds no noise
    for t in range(2, T + 1):
        posterior = math.sqrt((1 - alpha[t - 1]) / (1 - alpha[t]) * beta[t])
        assert sigmas[t - 1] == pytest.approx(posterior, rel=1e-9)
    half = ddim_schedule(noising, T, 0.5)[1]
    assert half == pytest.approx([s / 2 for s in sigmas], rel=1e-12)


def test_each_step_adds_noise_of_that_variance():
    """With a constant eps model each step t -> t-1 is a known affine map of z_t plus sigma_t * noise.

    A short, steep schedule keeps this fast while every step has a clearly nonzero sigma.
    """
    n = GaussianNoising(5, 0.05, 0.3)
    c = 0.3
    _, sigmas = ddim_schedule(n, 5, 1.0)
    z_T = torch.randn(40000, 1, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _, states = sample_ddim(
        n,
        lambda z, t: torch.full_like(z, c),
        z_T,
        5,
        eta=1.0,
        generator=torch.Generator().manual_seed(0),
        keep=range(6),
    )
    alpha = n.alpha.double()
    for t in range(2, 6):
        a_t, a_s, sigma = alpha[t], alpha[t - 1], sigmas[t - 1]
        mean = a_s.sqrt() * (states[t] - (1 - a_t).sqrt() * c) / a_t.sqrt() + (1 - a_s - sigma**2).sqrt() * c
        added = states[t - 1] - mean
        assert sigma > 0.05
        assert added.mean().abs() < 5 * sigma / math.sqrt(added.numel())
        assert added.std().item() == pytest.approx(sigma, rel=0.02)


@pytest.mark.parametrize("sampler", ["prince", "ddim"])
def test_keep_returns_requested_states_and_the_same_image(sampler):
    model = tiny_ddpm(T=20)
    opts = {"steps": 5} if sampler == "ddim" else {}  # DDIM visits 20, 16, 12, 8, 4, 0
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    plain = model.sample(2, gen(), sampler=sampler, **opts)
    out, states = model.sample(2, gen(), sampler=sampler, keep=[0, 8, 12, 20], **opts)
    assert torch.equal(plain, out)
    assert sorted(states) == [0, 8, 12, 20]
    assert torch.equal(states[0], out)
    g = gen()
    z_T = torch.randn((2, 1, 28, 28), generator=g)
    assert torch.equal(states[20], z_T)
    assert not torch.allclose(states[8], states[12])
    # trajectory from the same z_T, with the generator where sample left it, gives the same states
    traj = model.trajectory(z_T, [8, 0], g, sampler=sampler, **opts)
    assert sorted(traj) == [0, 8]
    assert torch.equal(traj[8], states[8]) and torch.equal(traj[0], out)


def test_ddim_keep_skips_steps_outside_the_subsequence():
    model = tiny_ddpm(T=20)
    _, states = model.sample(1, sampler="ddim", steps=4, keep=range(21))
    assert sorted(states) == [0, 5, 10, 15, 20]


def test_sample_prince_keep_matches_plain_run(noising):
    model = tiny_ddpm(T=10)
    z = torch.randn(2, 1, 28, 28)
    plain = sample_prince(model.noising, model.eps, z, torch.Generator().manual_seed(4))
    out, states = sample_prince(model.noising, model.eps, z, torch.Generator().manual_seed(4), keep=range(11))
    assert torch.equal(plain, out) and sorted(states) == list(range(11)) and states[10] is z


def test_ddim_with_every_step_and_eta_one_draws_like_prince_in_distribution():
    """Same marginal: with a constant eps model both samplers are Gaussian; compare mean and std."""
    n = GaussianNoising(50, 1e-4, 0.02)
    z = torch.randn(20000, 1, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    eps = lambda z, t: 0.1 * torch.ones_like(z)  # noqa: E731
    a = sample_prince(n, eps, z, torch.Generator().manual_seed(1))
    b = sample_ddim(n, eps, z, 50, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert a.mean().item() == pytest.approx(b.mean().item(), abs=0.03)
    assert a.std().item() == pytest.approx(b.std().item(), rel=0.03)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"steps": 0}, r"steps=0 .*1\.\.1000"),
        ({"steps": T + 1}, r"steps=1001 .*1\.\.1000"),
        ({"steps": 2.5}, r"steps=2\.5 .*1\.\.1000"),
        ({"eta": -0.1}, r"eta=-0\.1 .*\[0, 1\]"),
        ({"eta": 1.5}, r"eta=1\.5 .*\[0, 1\]"),
        ({"eta": float("nan")}, r"eta=nan .*\[0, 1\]"),
        ({"spacing": "cosine"}, r"spacing='cosine' .*\['quadratic', 'uniform'\]"),
        ({"keep": [5, 1001]}, r"keep contains \[1001\].*0\.\.1000"),
    ],
)
def test_ddim_refuses_bad_options_before_any_work(noising, kwargs, pattern):
    calls = []
    args = {"steps": 10, "eta": 0.0, "spacing": "uniform", **kwargs}
    with pytest.raises(ValueError, match=pattern):
        sample_ddim(noising, lambda z, t: calls.append(t) or z, torch.zeros(1, 1, 2, 2), **args)
    assert calls == []


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"sampler": "euler"}, r"sampler='euler'.*\['ddim', 'prince'\]"),
        ({"sampler": "ddim", "steps": 21}, r"steps=21 .*1\.\.20"),
        ({"sampler": "ddim", "steps": 0}, r"steps=0 .*1\.\.20"),
        ({"sampler": "ddim", "eta": 1.5}, r"eta=1\.5 .*\[0, 1\]"),
        ({"sampler": "ddim", "spacing": "log"}, r"spacing='log'.*\['quadratic', 'uniform'\]"),
        ({"sampler": "prince", "steps": 10}, r"steps=10.*sampler='prince'"),
        ({"sampler": "prince", "eta": 1.0}, r"eta=1\.0.*sampler='prince'"),
        ({"keep": [3, 21]}, r"keep contains \[21\].*0\.\.20"),
        ({"keep": [-1]}, r"keep contains \[-1\]"),
    ],
)
def test_sample_refuses_bad_options_before_drawing(kwargs, pattern):
    model = tiny_ddpm(T=20)
    model.eps = lambda z, t: pytest.fail("the network ran")
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=pattern):
        model.sample(2, gen, **kwargs)
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(0).get_state())
