"""DDPM (Ho et al. 2020) with Prince's notation, SPEC section 1.

The process knows nothing of the data set: it takes image tensors in whatever range the caller
trains on. The network is any module mapping (z, t / T) to a noise estimate.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .config import DDPMConfig
from .models import CNN


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

    def degrade(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """z_t for a batch x with one step t (int tensor, shape (N,)) per image.

        `eps` is the noise to add; when None it is drawn from `generator`.
        """
        if eps is None:
            eps = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        a = self.alpha[t].view(-1, *([1] * (x.dim() - 1)))
        return a.sqrt() * x + (1 - a).sqrt() * eps


EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def sample_prince(noising: GaussianNoising, eps_model: EpsModel, z: torch.Tensor,
                  generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Prince's algorithm 18.2 from z_T: for t = T..1,
    z <- (z - beta_t / sqrt(1 - alpha_t) * eps(z, t)) / sqrt(1 - beta_t), plus sqrt(beta_t) noise if t > 1.

    `eps_model(z, t)` receives integer steps t (shape (N,)). No clipping inside the loop.
    """
    steps = range(noising.T, 0, -1)
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc="sampling", leave=False)
    for t in steps:
        tt = torch.full((z.shape[0],), t, device=z.device, dtype=torch.long)
        beta, alpha = noising.beta[t], noising.alpha[t]
        z = (z - beta / (1 - alpha).sqrt() * eps_model(z, tt)) / (1 - beta).sqrt()
        if t > 1:
            noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            z = z + beta.sqrt() * noise
    return z


class DDPM(nn.Module):
    """A noise-prediction network trained with the DDPM objective and sampled with Prince 18.2."""

    kind = "ddpm"

    def __init__(self, cfg: DDPMConfig):
        super().__init__()
        self.cfg = cfg
        self.net = CNN(cfg.hidden, cfg.activation)
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

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, size: int = 28,
               progress: bool = False) -> torch.Tensor:
        """n images in the training range, starting from z_T ~ N(0, I)."""
        device = self.noising.beta.device
        z = torch.randn((n, 1, size, size), generator=generator, device=device)
        return sample_prince(self.noising, self.eps, z, generator, progress)
