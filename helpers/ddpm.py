"""DDPM (Ho et al. 2020) with Prince's notation, SPEC section 1, and the DDIM sampler (Song et al. 2021).

The process knows nothing of the data set: it takes image tensors in whatever range the caller
trains on. The network is any module mapping (z, t / T) to a noise estimate.

Both samplers can hand back intermediate states: pass `keep` (steps t) and they return
`(z_0, {t: z_t})` for the steps they visit, so an explorer never needs a second copy of a loop.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable

import torch
from torch import nn

from .config import DDPMConfig, check_choice, check_float, check_int
from .models import network

SAMPLERS = ("prince", "ddim")
SPACINGS = ("uniform", "quadratic")


class GaussianNoising(nn.Module):
    """The linear variance schedule and the forward process z_t = sqrt(alpha_t) x + sqrt(1 - alpha_t) eps.

    beta_t = beta1 + (beta2 - beta1) t / T for t = 0..T, and alpha_t = prod_{s=1..t} (1 - beta_s).
    The product starts at s = 1 as in the seed's definition, so alpha_0 = 1; the course's starter code
    also multiplied in (1 - beta_0), which differs by a factor 1 - 1e-4.
    Buffers are indexed by t directly (entry 0 is t = 0).
    """

    def __init__(self, T: int, beta1: float, beta2: float):
        super().__init__()
        self.T = T
        t = torch.arange(T + 1, dtype=torch.float64)
        beta = beta1 + (beta2 - beta1) * t / T
        alpha = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.float64), 1 - beta[1:]]), 0)
        self.register_buffer("beta", beta.float(), persistent=False)
        self.register_buffer("alpha", alpha.float(), persistent=False)

    def degrade(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        eps: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """z_t for a batch x with one step t (int tensor, shape (N,)) per image.

        `eps` is the noise to add; when None it is drawn from `generator`.
        """
        if eps is None:
            eps = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        a = self.alpha[t].view(-1, *([1] * (x.dim() - 1)))
        return a.sqrt() * x + (1 - a).sqrt() * eps


EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _kept_steps(keep: Iterable[int] | None, T: int) -> set[int] | None:
    """The steps t in `keep` as a set, refusing anything outside 0..T."""
    if keep is None:
        return None
    try:
        wanted = {operator.index(t) for t in keep}
    except TypeError:
        raise ValueError(f"keep={keep!r} is not allowed; expected integer steps in 0..{T}") from None
    bad = sorted(t for t in wanted if not 0 <= t <= T)
    if bad:
        raise ValueError(f"keep contains {bad}, which is not allowed; expected integer steps in 0..{T}")
    return wanted


def _loop(steps, progress: bool):
    if progress:
        from tqdm.auto import tqdm

        return tqdm(steps, desc="sampling", leave=False)
    return steps


@torch.no_grad()
def sample_prince(
    noising: GaussianNoising,
    eps_model: EpsModel,
    z: torch.Tensor,
    generator: torch.Generator | None = None,
    progress: bool = False,
    keep: Iterable[int] | None = None,
):
    """Prince's algorithm 18.2 from z_T: for t = T..1,
    z <- (z - beta_t / sqrt(1 - alpha_t) * eps(z, t)) / sqrt(1 - beta_t), plus sqrt(beta_t) noise if t > 1.

    `eps_model(z, t)` receives integer steps t (shape (N,)). No clipping inside the loop.
    Returns z_0, or `(z_0, {t: z_t for t in keep})` when `keep` is given (every t in 0..T is visited).
    """
    wanted = _kept_steps(keep, noising.T)
    states = {}
    if wanted is not None and noising.T in wanted:
        states[noising.T] = z
    for t in _loop(range(noising.T, 0, -1), progress):
        tt = torch.full((z.shape[0],), t, device=z.device, dtype=torch.long)
        beta, alpha = noising.beta[t], noising.alpha[t]
        z = (z - beta / (1 - alpha).sqrt() * eps_model(z, tt)) / (1 - beta).sqrt()
        if t > 1:
            noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            z = z + beta.sqrt() * noise
        if wanted is not None and t - 1 in wanted:
            states[t - 1] = z
    return z if wanted is None else (z, states)


def check_ddim(T: int, steps, eta, spacing) -> None:
    """Refuse DDIM settings outside their ranges, naming the parameter and what is allowed."""
    check_int("steps", steps, 1, T, allowed=f"an integer in 1..{T} (T = {T})")
    check_float("eta", eta, 0, 1, low_open=False, high_open=False, allowed="a number in [0, 1]")
    check_choice("spacing", spacing, SPACINGS)


def ddim_schedule(
    noising: GaussianNoising, steps: int, eta: float = 0.0, spacing: str = "uniform"
) -> tuple[list[int], list[float]]:
    """The DDIM subsequence tau_1 < ... < tau_S = T of 1..T and the noise std of each step.

    tau_i = i + floor((T - S) f(i / S)) with f(u) = u ("uniform") or u^2 ("quadratic", denser near
    t = 0 as in the DDIM paper); the `+ i` keeps the steps distinct for any S <= T, and S = T gives
    every step. sigmas[i] belongs to the step from tau_i to tau_{i-1} (tau_0 = 0):
    sigma = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev), which for eta = 1 and S = T
    is the DDPM posterior std.
    """
    T = noising.T
    check_ddim(T, steps, eta, spacing)
    S = steps
    if spacing == "uniform":
        taus = [i + (T - S) * i // S for i in range(1, S + 1)]
    else:
        taus = [i + (T - S) * i * i // (S * S) for i in range(1, S + 1)]
    prev = [0] + taus[:-1]
    # In float64 via log(1 - beta): 1 - a_t / a_prev is tiny near t = 0 and would lose its digits
    # as a difference of float32 products.
    log_a = torch.cat([torch.zeros(1, dtype=torch.float64), torch.log1p(-noising.beta[1:].cpu().double()).cumsum(0)])
    sigmas = [
        eta
        * math.sqrt(
            -math.expm1(log_a[s].item()) / -math.expm1(log_a[t].item()) * -math.expm1(log_a[t].item() - log_a[s].item())
        )
        for t, s in zip(taus, prev)
    ]
    return taus, sigmas


@torch.no_grad()
def sample_ddim(
    noising: GaussianNoising,
    eps_model: EpsModel,
    z: torch.Tensor,
    steps: int,
    eta: float = 0.0,
    spacing: str = "uniform",
    generator: torch.Generator | None = None,
    progress: bool = False,
    keep: Iterable[int] | None = None,
):
    """DDIM (Song et al. 2021, eq. 12) from z_T over the subsequence of `ddim_schedule`.

    Each step predicts x0 = (z - sqrt(1 - a_t) eps) / sqrt(a_t) and moves to
    z_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma noise; the last step has
    a_prev = alpha_0 = 1, so it returns the predicted x0. No clipping. eta = 0 draws no noise at
    all (deterministic given z_T); eta = 1 with steps = T is DDPM's ancestral sampler.
    Returns z_0, or `(z_0, {t: z_t})` for the t in `keep` that are visited (the taus, 0 and T).
    """
    taus, sigmas = ddim_schedule(noising, steps, eta, spacing)
    wanted = _kept_steps(keep, noising.T)
    alpha = noising.alpha.cpu().double()  # on the CPU first: MPS has no float64
    states = {}
    if wanted is not None and noising.T in wanted:
        states[noising.T] = z
    pairs = list(zip(taus[::-1], ([0] + taus[:-1])[::-1], sigmas[::-1]))
    for t, s, sigma in _loop(pairs, progress):
        a_t, a_s = alpha[t].item(), alpha[s].item()
        tt = torch.full((z.shape[0],), t, device=z.device, dtype=torch.long)
        eps = eps_model(z, tt)
        x0 = (z - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        z = math.sqrt(a_s) * x0 + math.sqrt(max(1 - a_s - sigma**2, 0.0)) * eps
        if sigma > 0:
            z = z + sigma * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        if wanted is not None and s in wanted:
            states[s] = z
    return z if wanted is None else (z, states)


class DDPM(nn.Module):
    """A noise-prediction network trained with the DDPM objective, sampled with Prince 18.2 or DDIM."""

    kind = "ddpm"

    def __init__(self, cfg: DDPMConfig):
        super().__init__()
        self.cfg = cfg
        self.net = network(cfg)
        self.noising = GaussianNoising(cfg.T, *cfg.betas)

    @property
    def T(self) -> int:
        return self.noising.T

    def eps(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise for integer steps t; the network sees t / T."""
        return self.net(z, t.float() / self.T)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """MSE between the noise and its prediction, with t ~ Uniform{1..T} per image."""
        t = torch.randint(1, self.T + 1, (x.shape[0],), device=x.device, generator=generator)
        eps = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        z = self.noising.degrade(x, t, eps)
        return nn.functional.mse_loss(self.eps(z, t), eps)

    def _check_sampler(self, sampler: str, steps, eta, spacing) -> int:
        """Validate the sampler options; returns the number of steps."""
        check_choice("sampler", sampler, SAMPLERS)
        steps = self.T if steps is None else steps
        if sampler == "ddim":
            check_ddim(self.T, steps, eta, spacing)
        elif (steps, eta, spacing) != (self.T, 0.0, "uniform"):
            # Prince's sampler has no such knobs: refuse rather than silently ignore them.
            raise ValueError(
                f"steps={steps!r}, eta={eta!r}, spacing={spacing!r} are not allowed with "
                f"sampler='prince'; expected the defaults (steps T = {self.T}, eta 0.0, "
                "spacing 'uniform') or sampler='ddim'"
            )
        return steps

    @torch.no_grad()
    def _run(self, z, generator, progress, sampler, steps, eta, spacing, keep):
        if sampler == "prince":
            return sample_prince(self.noising, self.eps, z, generator, progress, keep)
        return sample_ddim(self.noising, self.eps, z, steps, eta, spacing, generator, progress, keep)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        size: int = 28,
        progress: bool = False,
        *,
        sampler: str = "prince",
        steps: int | None = None,
        eta: float = 0.0,
        spacing: str = "uniform",
        keep: Iterable[int] | None = None,
    ):
        """n images in the training range, starting from z_T ~ N(0, I).

        `sampler` is "prince" (Prince 18.2, T steps) or "ddim" (`steps` of them, default T, with
        `eta` and `spacing`). With `keep`, returns `(images, {t: z_t})` as the samplers do.
        """
        steps = self._check_sampler(sampler, steps, eta, spacing)
        wanted = _kept_steps(keep, self.T)
        device = self.noising.beta.device
        z = torch.randn((n, 1, size, size), generator=generator, device=device)
        return self._run(z, generator, progress, sampler, steps, eta, spacing, wanted)

    @torch.no_grad()
    def trajectory(
        self,
        z_T: torch.Tensor,
        keep: Iterable[int],
        generator: torch.Generator | None = None,
        sampler: str = "prince",
        steps: int | None = None,
        eta: float = 0.0,
        spacing: str = "uniform",
        progress: bool = False,
    ) -> dict[int, torch.Tensor]:
        """The states {t: z_t} for the visited t in `keep` of one sampling run from a given z_T."""
        if keep is None:
            raise ValueError("keep=None is not allowed; expected integer steps in 0..T")
        steps = self._check_sampler(sampler, steps, eta, spacing)
        wanted = _kept_steps(keep, self.T)
        return self._run(z_T, generator, progress, sampler, steps, eta, spacing, wanted)[1]
