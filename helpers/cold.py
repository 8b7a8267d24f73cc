"""Cold diffusion (Bansal et al. 2022) with row/column averaging, SPEC section 2.

A restoration network R(z_t, t / T) (the same CNN as the DDPM) learns to predict the clean image x from
z_t = D(x, t). Sampling runs Bansal's Algorithm 2 (or 1, or one direct step) from x_T, where x_T is either
D(x, T) of a held-out image (conditional: reconstruction, it leaks the image's row/column means) or a
draw from a Gaussian mixture fitted on the T band means of D(x, T) over the training set, clamped to
the data's range (unconditional: generation). The mixture is stored as buffers, so it travels with the
model's state_dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .config import ColdConfig, check_choice, check_int
from .degradations import Degradation, RowColumnAveraging
from .models import network

METHODS = ("direct", "algorithm1", "algorithm2")
# The unconditional prior over the T band means of D(x, T): a 10-component full-covariance mixture.
# On the MNIST test set it gains over a single full-covariance Gaussian (K = 1) about 27 nats per image
# in log-likelihood on the 28 column means (90.2 vs 63.4), 26 on the 28 row means and 5 on the 7 band
# means, with train and test values within 0.3 nats of each other (`prior_log_prob` measures it).
PRIOR_COMPONENTS = 10
PRIOR_MAX_IMAGES = 10_000  # EM runs on the first N training images (a few seconds on a CPU)
PRIOR_ITERS = 50
PRIOR_REG = 1e-6  # added to every covariance diagonal: some edge columns are constant
DATA_RANGE = (-0.5, 0.5)  # the model range of pixels, hence of every band mean of D(x, T)

Restorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- sampling
@torch.no_grad()
def sample_cold(
    degradation: Degradation,
    restorer: Restorer,
    x: torch.Tensor,
    method: str = "algorithm2",
    progress: bool = False,
    start: int | None = None,
) -> torch.Tensor:
    """Restore x_start (a batch at step `start`, default T) to x_0. `restorer(z, s)` predicts x from z
    at integer steps s.

    algorithm2 (Bansal Alg. 2): x_hat = R(x_s, s); x_{s-1} = x_s - D(x_hat, s) + D(x_hat, s-1).
    algorithm1 (Bansal Alg. 1): x_{s-1} = D(R(x_s, s), s-1).   direct: R(x_start, start) in one step.
    At start = 0 nothing is degraded, so every method returns x unchanged.
    """
    check_choice("method", method, METHODS)
    T, D = degradation.T, degradation.degrade
    start = T if start is None else start
    check_int("start", start, 0, T, allowed=f"an integer step in 0..{T}")
    step = lambda s: torch.full((x.shape[0],), s, device=x.device, dtype=torch.long)  # noqa: E731
    if start == 0:
        return x
    if method == "direct":
        return restorer(x, step(start))
    steps = range(start, 0, -1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=method, leave=False)
    for s in steps:
        x_hat = restorer(x, step(s))
        if method == "algorithm2":
            x = x - D(x_hat, step(s)) + D(x_hat, step(s - 1))
        else:
            x = D(x_hat, step(s - 1))
    return x


# --------------------------------------------------------------------------- the prior
def _mixture_logpdf(
    x: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor, scale_tril: torch.Tensor
) -> torch.Tensor:
    """log(w_k N(x_i; mu_k, L_k L_k^T)) for every point and component: (n, K)."""
    z = torch.linalg.solve_triangular(scale_tril, (x[None] - mean[:, None]).transpose(1, 2), upper=False)
    log_det = scale_tril.diagonal(dim1=1, dim2=2).log().sum(1)
    return (
        -0.5 * (z**2).sum(1) - log_det[:, None] - 0.5 * x.shape[1] * math.log(2 * math.pi) + weight.log()[:, None]
    ).T


def fit_gaussian_mixture(
    x: torch.Tensor,
    components: int = PRIOR_COMPONENTS,
    iters: int = PRIOR_ITERS,
    reg: float = PRIOR_REG,
    tol: float = 1e-3,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EM for a full-covariance Gaussian mixture on points x (n, d), in float64.

    Returns (weights (K,), means (K, d), Cholesky factors (K, d, d)) in float32. Starts from K distinct
    points drawn with its own generator (the global RNG is untouched) and the pooled covariance; stops
    after `iters` steps or when the mean log-likelihood gains less than `tol` nats. After every M-step
    the mixture's mean and covariance equal the data's (plus `reg` on the diagonal); with K = 1 it is
    the plain Gaussian fit.
    """
    x = x.detach().cpu().double()  # on the CPU first: MPS has no float64
    n, d = x.shape
    if not 1 <= components <= n:
        raise ValueError(f"components={components!r} is not allowed; expected 1..{n} (the number of points)")
    eye = reg * torch.eye(d, dtype=x.dtype)
    mean = x[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:components]]
    cov = (torch.cov(x.T, correction=0) + eye).expand(components, d, d)
    weight = torch.full((components,), 1.0 / components, dtype=x.dtype)
    best = -math.inf
    for _ in range(iters):
        log_p = _mixture_logpdf(x, weight, mean, torch.linalg.cholesky(cov))
        log_like = log_p.logsumexp(1, keepdim=True)
        resp = (log_p - log_like).exp()
        count = resp.sum(0) + 1e-12
        weight, mean = count / n, resp.T @ x / count[:, None]
        centred = x[None] - mean[:, None]
        cov = (resp.T[:, :, None] * centred).transpose(1, 2) @ centred / count[:, None, None] + eye
        gain, best = log_like.mean().item() - best, log_like.mean().item()
        if gain < tol:
            break
    return weight.float(), mean.float(), torch.linalg.cholesky(cov).float()


# --------------------------------------------------------------------------- the model
class ColdDiffusion(nn.Module):
    """A restoration network trained to undo row/column averaging, and the prior for generation."""

    kind = "cold"

    def __init__(self, cfg: ColdConfig, prior_components: int = PRIOR_COMPONENTS):
        super().__init__()
        self.cfg = cfg
        self.net = network(cfg)
        self.degradation = RowColumnAveraging(cfg.axis, cfg.group, cfg.schedule, cfg.schedule_seed)
        K, d = prior_components, self.degradation.T
        self.register_buffer("prior_weight", torch.zeros(K))  # all zero until fit_prior
        self.register_buffer("prior_mean", torch.zeros(K, d))
        self.register_buffer("prior_scale_tril", torch.zeros(K, d, d))

    @property
    def T(self) -> int:
        return self.degradation.T

    def restore(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """R(z_t, t): the predicted clean image for integer steps t; the network sees t / T."""
        return self.net(z, t.float() / self.T)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """|| x - R(D(x, t), t) || (L2: MSE, or L1 per cfg.loss), t ~ Uniform{1..T} per image."""
        t = torch.randint(1, self.T + 1, (x.shape[0],), device=x.device, generator=generator)
        pred = self.restore(self.degradation.degrade(x, t), t)
        return (nn.functional.mse_loss if self.cfg.loss == "l2" else nn.functional.l1_loss)(pred, x)

    # ------------------------------------------------------------------ prior
    def set_prior(self, weight: torch.Tensor, mean: torch.Tensor, scale_tril: torch.Tensor) -> ColdDiffusion:
        for name, value in (("prior_weight", weight), ("prior_mean", mean), ("prior_scale_tril", scale_tril)):
            buf = getattr(self, name)
            if value.shape != buf.shape:
                raise ValueError(f"{name} has shape {tuple(value.shape)}; this model needs {tuple(buf.shape)}")
            buf.copy_(value)
        return self

    @classmethod
    def build(cls, cfg: ColdConfig, data: torch.Tensor | None) -> ColdDiffusion:
        """A new model whose prior of x_T is fitted on the run's training data; a model about to
        receive a checkpoint (data None) gets its prior from there."""
        model = cls(cfg)
        return model if data is None else model.fit_prior(data)

    @torch.no_grad()
    def fit_prior(self, train_images: torch.Tensor, max_images: int = PRIOR_MAX_IMAGES) -> ColdDiffusion:
        """Fit the mixture on the T band means of D(x, T) of (the first `max_images` of) the images."""
        means = self.degradation.means(train_images[:max_images].float().cpu()).flatten(1)
        return self.set_prior(*fit_gaussian_mixture(means, self.prior_weight.shape[0]))

    @torch.no_grad()
    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n fully degraded images x_T drawn from the fitted prior (unconditional start).

        Band means are clamped to the data's range [-0.5, 0.5]. Real band means pile up at -0.5
        (blank edge columns and rows), and the Gaussian components around that point mass put about
        half of their draws below it, values the restorer never saw; clamping turns them back into the
        point mass. It moves the draws' means by at most about 0.005 and their covariance by about 5%,
        as much as two disjoint sets of 10,000 training images differ (tests/test_cold.py measures it).
        """
        if not bool(self.prior_weight.sum() > 0):
            raise RuntimeError("the prior is not fitted: call fit_prior(train_images) first")
        dev = self.prior_mean.device
        k = torch.multinomial(self.prior_weight, n, replacement=True, generator=generator)
        eps = torch.randn((n, self.T, 1), device=dev, generator=generator)
        means = self.prior_mean[k] + (self.prior_scale_tril[k] @ eps).squeeze(-1)
        return self.degradation.expand(means.clamp(*DATA_RANGE)[:, None])

    @torch.no_grad()
    def prior_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density (nats) under the prior of the band means of D(x, T), one value per image."""
        means = self.degradation.means(x.to(self.prior_mean.device)).flatten(1)
        return _mixture_logpdf(means, self.prior_weight, self.prior_mean, self.prior_scale_tril).logsumexp(1)

    # ------------------------------------------------------------------ sampling
    def sample_from(
        self, x_T: torch.Tensor, method: str = "algorithm2", progress: bool = False, start: int | None = None
    ) -> torch.Tensor:
        """Restore a batch at step `start` (default T: fully degraded) with `method`."""
        return sample_cold(self.degradation, self.restore, x_T, method, progress, start)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, method: str = "algorithm2") -> torch.Tensor:
        """Conditional mode: restore D(x, T) of given (held-out) images."""
        return self.sample_from(self.degradation.degrade(x, self.T), method)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, method: str = "algorithm2", progress: bool = False
    ) -> torch.Tensor:
        """Unconditional generation: n images in the training range from x_T drawn from the prior."""
        return self.sample_from(self.sample_prior(n, generator), method, progress)


# --------------------------------------------------------------------------- reconstruction metrics
@torch.no_grad()
def reconstructions(model: ColdDiffusion, x: torch.Tensor, batch_size: int = 1000) -> dict[str, torch.Tensor]:
    """Degraded D(x, T) and its direct, Algorithm 1 and Algorithm 2 restorations (model range, on the CPU)."""
    dev = model.prior_mean.device
    out: dict[str, list[torch.Tensor]] = {"degraded": [], **{m: [] for m in METHODS}}
    for batch in x.split(batch_size):
        x_T = model.degradation.degrade(batch.to(dev), model.T)
        out["degraded"].append(x_T.cpu())
        for m in METHODS:
            out[m].append(model.sample_from(x_T, m).float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def reconstruction_metrics(
    x: torch.Tensor, images: dict[str, torch.Tensor], fid_fn: Callable[[torch.Tensor], float | None] | None = None
) -> dict[str, dict[str, float | None]]:
    """RMSE, SSIM, PSNR (means over images, on [0, 1] = x + 0.5 clamped) of every entry of `images`
    against the originals x, and FID from `fid_fn(images in the model range)` when one is given."""
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    from .data import to_unit_range

    target = to_unit_range(x.float().cpu())
    table = {}
    for name, img in images.items():
        pred = to_unit_range(img.float().cpu())
        row = {
            "RMSE": (pred - target).pow(2).mean(dim=(1, 2, 3)).sqrt().mean().item(),
            "SSIM": StructuralSimilarityIndexMeasure(data_range=1.0)(pred, target).item(),
            "PSNR": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))(pred, target).item(),
        }
        if fid_fn is not None:
            row["FID"] = fid_fn(img)
        table[name] = row
    return table
