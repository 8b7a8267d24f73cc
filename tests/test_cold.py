"""Cold diffusion: the row/column averaging operator, the samplers, the prior and a tiny training run."""

from __future__ import annotations

import io
import itertools

import pytest
import torch

from helpers import config, runs
from helpers.cold import (
    METHODS,
    ColdDiffusion,
    fit_gaussian_mixture,
    reconstruction_metrics,
    reconstructions,
    sample_cold,
)
from helpers.config import COLD_PRESETS, ColdConfig, cold_preset
from helpers.data import training_images
from helpers.ddpm import GaussianNoising
from helpers.degradations import AXES, GROUPS, SCHEDULES, Degradation, RowColumnAveraging, degrade_loop

VARIANTS = list(itertools.product(AXES, GROUPS, SCHEDULES))


def op_of(preset: str) -> RowColumnAveraging:
    c = COLD_PRESETS[preset]
    return RowColumnAveraging(c.axis, c.group, c.schedule, c.schedule_seed)


def rand_images(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 1, 28, 28), generator=torch.Generator().manual_seed(seed)) - 0.5


def rand_steps(n: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, T + 1, (n,), generator=torch.Generator().manual_seed(seed))


def lines(x: torch.Tensor, axis: str) -> torch.Tensor:
    """(N, 1, 28, 28) -> (N, 28 lines, 28 pixels along each line)."""
    return x[:, 0] if axis == "rows" else x[:, 0].transpose(1, 2)


# --------------------------------------------------------------------------- the operator
def test_orders_are_the_spec_lists():
    spec = {  # 1-indexed, as SPEC section 2 writes them
        ("outside-in", 1): [
            1,
            28,
            2,
            27,
            3,
            26,
            4,
            25,
            5,
            24,
            6,
            23,
            7,
            22,
            8,
            21,
            9,
            20,
            10,
            19,
            11,
            18,
            12,
            17,
            13,
            16,
            14,
            15,
        ],
        ("inside-out", 1): [
            14,
            15,
            13,
            16,
            12,
            17,
            11,
            18,
            10,
            19,
            9,
            20,
            8,
            21,
            7,
            22,
            6,
            23,
            5,
            24,
            4,
            25,
            3,
            26,
            2,
            27,
            1,
            28,
        ],
        ("outside-in", 4): [1, 7, 2, 6, 3, 5, 4],
        ("inside-out", 4): [4, 5, 3, 6, 2, 7, 1],
    }
    for (schedule, group), order in spec.items():
        for axis in AXES:
            op = RowColumnAveraging(axis, group, schedule)
            assert [i + 1 for i in op.order.tolist()] == order
            assert len(order) == op.T
    for group in GROUPS:
        op = RowColumnAveraging("columns", group, "random", 3)
        assert sorted(op.order.tolist()) == list(range(28 // group))


def test_both_processes_are_degradations():
    assert isinstance(RowColumnAveraging(), Degradation)
    assert isinstance(GaussianNoising(10, 1e-4, 0.02), Degradation)


@pytest.mark.parametrize("axis,group,schedule", VARIANTS)
def test_step_zero_is_identity_and_step_T_is_the_line_means(axis, group, schedule):
    op, x = RowColumnAveraging(axis, group, schedule, 5), rand_images()
    assert torch.equal(op.degrade(x, torch.zeros(16, dtype=torch.long)), x)
    full = lines(op.degrade(x, op.T), axis)
    assert torch.allclose(full, full[..., :1].expand_as(full))  # every row (column) is constant
    band_means = lines(x, axis).unflatten(1, (op.T, group)).mean(dim=(2, 3))
    assert torch.allclose(full[..., 0], band_means.repeat_interleave(group, dim=1), atol=1e-6)
    if group == 1:
        assert torch.allclose(full[..., 0], lines(x, axis).mean(-1), atol=1e-6)


@pytest.mark.parametrize("axis,group,schedule", VARIANTS)
def test_degrading_twice_is_degrading_to_the_later_step(axis, group, schedule):
    op, x = RowColumnAveraging(axis, group, schedule, 7), rand_images(64)
    s, t = rand_steps(64, op.T, 1), rand_steps(64, op.T, 2)
    assert torch.allclose(op.degrade(op.degrade(x, s), t), op.degrade(x, torch.maximum(s, t)), atol=1e-6)


@pytest.mark.parametrize("axis,group,schedule", VARIANTS)
def test_each_step_changes_exactly_the_lines_its_schedule_names(axis, group, schedule):
    op, x = RowColumnAveraging(axis, group, schedule, 11), rand_images(4)
    for step in range(1, op.T + 1):
        changed = (op.degrade(x, step) != op.degrade(x, step - 1)).any(dim=(0, 1))
        changed = changed.any(1) if axis == "rows" else changed.any(0)
        band = int(op.order[step - 1])
        assert changed.nonzero().flatten().tolist() == list(range(band * group, (band + 1) * group))


@pytest.mark.parametrize("preset", list(COLD_PRESETS))
def test_vectorised_equals_the_reference_loop_for_every_preset(preset):
    op = op_of(preset)
    x = torch.cat([rand_images(12), training_images(12)])
    t = torch.cat([rand_steps(22, op.T), torch.tensor([0, op.T])])
    assert torch.allclose(op.degrade(x, t), degrade_loop(op, x, t), atol=1e-6)


@pytest.mark.parametrize("axis,group,schedule", VARIANTS)
def test_vectorised_equals_the_reference_loop_for_every_variant(axis, group, schedule):
    op, x = RowColumnAveraging(axis, group, schedule, 2), rand_images(16, 3)
    t = rand_steps(16, op.T, 4)
    assert torch.allclose(op.degrade(x, t), degrade_loop(op, x, t), atol=1e-6)


def test_random_schedule_comes_from_its_seed_and_survives_state_dict():
    a, b = RowColumnAveraging(schedule_seed=1), RowColumnAveraging(schedule_seed=1)
    assert torch.equal(a.order, b.order)
    assert not torch.equal(a.order, RowColumnAveraging(schedule_seed=2).order)
    assert "order" in a.state_dict()

    model = ColdDiffusion(cold_preset("columns", schedule_seed=1)).fit_prior(training_images(300))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    other = ColdDiffusion(cold_preset("columns", schedule_seed=2))
    other.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert torch.equal(other.degradation.order, a.order)
    x, t = rand_images(8), rand_steps(8, 28)
    assert torch.equal(other.degradation.degrade(x, t), model.degradation.degrade(x, t))
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(other.sample_prior(8, g()), model.sample_prior(8, g()))


# --------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("preset", list(COLD_PRESETS))
def test_oracle_restorer_recovers_x_with_both_algorithms(preset):
    op = op_of(preset)
    x = torch.cat([rand_images(8), training_images(8)])
    oracle = lambda z, s: x  # noqa: E731
    x_T = op.degrade(x, op.T)
    for method in METHODS:
        assert torch.allclose(sample_cold(op, oracle, x_T, method), x, atol=1e-6), method


def test_algorithm2_steps_through_every_degraded_level():
    op, x = op_of("columns"), training_images(4)
    seen = []

    def oracle(z, s):
        seen.append((int(s[0]), torch.allclose(z, op.degrade(x, s), atol=1e-6)))
        return x

    sample_cold(op, oracle, op.degrade(x, op.T), "algorithm2")
    assert seen == [(s, True) for s in range(op.T, 0, -1)]


@pytest.mark.parametrize("start", [0, 1, 9, 28])
def test_restoring_from_an_intermediate_step(start):
    op, x = op_of("columns"), training_images(4)
    seen = []

    def oracle(z, s):
        seen.append(int(s[0]))
        return x

    z = op.degrade(x, start)
    for method in METHODS:
        assert torch.allclose(sample_cold(op, oracle, z, method, start=start), x, atol=1e-6), method
    # Algorithm 1 and 2 visit start..1, direct calls the restorer once at `start`; at 0 nothing runs.
    assert seen == ([start] + 2 * list(range(start, 0, -1)) if start else [])
    for bad in (-1, 29, 2.0, True):
        with pytest.raises(ValueError, match=r"start=.* expected an integer step in 0\.\.28"):
            sample_cold(op, oracle, z, "direct", start=bad)


# --------------------------------------------------------------------------- the prior
@pytest.mark.parametrize("preset", list(COLD_PRESETS))
def test_prior_draws_stay_in_the_data_range_with_the_data_moments(preset):
    x = training_images(2000)
    model = ColdDiffusion(cold_preset(preset)).fit_prior(x)
    data = model.degradation.means(x)[:, 0].double()
    draws = model.degradation.means(model.sample_prior(10_000, torch.Generator().manual_seed(0)))[:, 0].double()
    assert draws.min() >= -0.5 and draws.max() <= 0.5  # every band mean a real D(x, T) can have
    # Unclamped, the mixture draws band means below black (the reason for the clamp).
    g = torch.Generator().manual_seed(1)
    k = torch.multinomial(model.prior_weight, 1000, replacement=True, generator=g)
    raw = model.prior_mean[k] + (model.prior_scale_tril[k] @ torch.randn(1000, model.T, 1, generator=g))[..., 0]
    assert (raw < -0.5).any(1).float().mean() > 0.05
    # Clamping moves the moments about as much as two disjoint sets of 10,000 training images differ
    # (0.005 in the means, 4-6% of the covariance): a prior fitted in logit space misses by 20-70%.
    assert (draws.mean(0) - data.mean(0)).abs().max() < 0.01
    data_cov = torch.cov(data.T)
    assert (torch.cov(draws.T) - data_cov).norm() / data_cov.norm() < 0.1


def test_mixture_moments_equal_the_data_moments():
    """After an M-step, sum_k w_k mu_k is the data mean and sum_k w_k (S_k + mu_k mu_k^T) - mu mu^T
    the data covariance plus `reg`: the mixture keeps the first two moments exactly."""
    means = RowColumnAveraging("rows", 4).means(training_images(1000)).flatten(1).double()
    w, mu, L = (v.double() for v in fit_gaussian_mixture(means, components=4, iters=5, reg=1e-6))
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (L @ L.transpose(1, 2) + mu[:, :, None] * mu[:, None, :])).sum(0)
    assert torch.allclose(mean, means.mean(0), atol=1e-5)
    cov = torch.cov(means.T, correction=0) + 1e-6 * torch.eye(means.shape[1], dtype=torch.double)
    assert torch.allclose(second - mean[:, None] * mean[None], cov, atol=1e-5)


def test_one_component_mixture_is_the_gaussian_fit():
    x = torch.randn(500, 5, generator=torch.Generator().manual_seed(0)) @ torch.randn(
        5, 5, generator=torch.Generator().manual_seed(1)
    )
    w, mu, L = fit_gaussian_mixture(x, components=1, reg=0.0)
    assert torch.allclose(w, torch.ones(1))
    assert torch.allclose(mu[0], x.mean(0), atol=1e-5)
    assert torch.allclose(L[0] @ L[0].T, torch.cov(x.T, correction=0), atol=1e-4)


def test_prior_log_prob_of_one_component_is_the_gaussian_density():
    x = training_images(500)
    model = ColdDiffusion(cold_preset("rows7"), prior_components=1).fit_prior(x)
    means = model.degradation.means(x[:50]).flatten(1)
    gauss = torch.distributions.MultivariateNormal(model.prior_mean[0], scale_tril=model.prior_scale_tril[0])
    assert torch.allclose(model.prior_log_prob(x[:50]), gauss.log_prob(means), atol=1e-3)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"axis": "diagonal"}, ["axis", "rows", "columns"]),
        ({"group": 2}, ["group", "1", "4"]),
        ({"group": True}, ["group"]),
        ({"schedule": "zigzag"}, ["schedule", "outside-in", "inside-out", "random"]),
        ({"schedule_seed": -1}, ["schedule_seed", ">= 0"]),
    ],
)
def test_bad_operator_parameters_are_named(kwargs, words):
    with pytest.raises(ValueError) as err:
        RowColumnAveraging(**kwargs)
    assert all(w in str(err.value) for w in words)


def test_bad_steps_and_config_are_named():
    op, x = RowColumnAveraging(group=4), rand_images(2)
    for t in (torch.tensor([0, 8]), torch.tensor([-1, 0])):
        with pytest.raises(ValueError, match=r"out of range; expected steps in 0\.\.7"):
            op.degrade(x, t)
    with pytest.raises(ValueError, match="one step per image"):
        op.degrade(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="one step per image"):
        op.degrade(x, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"out of range"):
        degrade_loop(op, x, torch.tensor([0, 9]))
    with pytest.raises(ValueError, match=r"T=28 .*7 for group=4"):
        cold_preset("columns7", T=28)
    with pytest.raises(ValueError, match=r"T=7 .*28 for group=1"):
        ColdConfig(T=7)
    with pytest.raises(ValueError, match="method='alg3'.*algorithm2"):
        sample_cold(op, lambda z, s: z, x, "alg3")
    with pytest.raises(RuntimeError, match="fit_prior"):
        ColdDiffusion(ColdConfig()).sample(2)


# --------------------------------------------------------------------------- metrics and training
def test_reconstruction_metrics_table():
    model = ColdDiffusion(cold_preset("columns7", hidden=(4,))).fit_prior(training_images(300))
    x = training_images(20)
    images = reconstructions(model, x, batch_size=8)
    assert set(images) == {"degraded", *METHODS}
    assert all(v.shape == x.shape for v in images.values())
    seen = []
    table = reconstruction_metrics(x, {**images, "original": x}, fid_fn=lambda im: seen.append(im) or 1.5)
    assert table["original"]["RMSE"] == 0 and table["original"]["SSIM"] == pytest.approx(1.0)
    assert 0 < table["degraded"]["RMSE"] < 1 and table["degraded"]["PSNR"] > 0
    assert table["degraded"]["FID"] == 1.5 and seen[0].min() < 0  # FID receives model-range images


def test_tiny_training_run_learns_and_is_cached(tmp_path):
    kw = dict(
        runs_dir=tmp_path,
        progress=False,
        score_epochs=False,
        train_limit=256,
        epochs=3,
        n_grid=4,
        overrides={"batch_size": 32, "lr": 1e-3, "hidden": (8, 8)},
    )
    run = runs.train("cold", "columns", config.profile("smoke"), **kw)
    losses = run.iter_loss
    assert len(losses) == 24 and not run.cached
    assert sum(losses[-4:]) < 0.8 * sum(losses[:4])
    assert run.samples[1].shape == (4, 1, 28, 28)
    fitted = ColdDiffusion(run.model.cfg).fit_prior(training_images(256))
    for name in ("prior_weight", "prior_mean", "prior_scale_tril", "degradation.order"):
        assert torch.allclose(run.model.state_dict()[name], fitted.state_dict()[name], atol=1e-6)

    again = runs.train("cold", "columns", config.profile("smoke"), **kw)
    assert again.cached and again.dir == run.dir and again.iter_loss == losses
    x = rand_images(4)
    assert torch.equal(again.model.restore(x, torch.full((4,), 5)), run.model.restore(x, torch.full((4,), 5)))
