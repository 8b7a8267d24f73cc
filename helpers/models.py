"""The noise-prediction CNN of the course's starter code (SPEC section 1), and a small U-Net beside it.

A network only maps (image batch, time in [0, 1]) to an image batch: it knows nothing of the
diffusion process that trains it, so the same classes serve the DDPM (predicting noise) and cold
diffusion (predicting the clean image). `network(cfg)` builds the one a configuration names (its
`net`: "cnn", the seed's, or "unet", beyond the seed); `describe(net)` reports its size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ACTIVATIONS, NETS, UNET_GROUPS, check_choice, check_hidden, check_net


def activation(name: str) -> nn.Module:
    check_choice("activation", name, ACTIVATIONS)
    return getattr(nn, name)()


class ConvBlock(nn.Module):
    """Conv2d(k=7, same padding) -> LayerNorm over (C, 28, 28) -> activation."""

    def __init__(self, c_in: int, c_out: int, act: str, size: int = 28):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_out, 7, padding=3),
            nn.LayerNorm((c_out, size, size)),
            activation(act),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TimeEmbedding(nn.Module):
    """t in [0, 1] -> 16 fixed frequencies (sin(f t), cos(f t) - 1) -> MLP -> `out` features."""

    def __init__(self, out: int, act: str, n_freqs: int = 16):
        super().__init__()
        freqs = torch.tensor([0.0] + [2 * math.pi * 1.5**k for k in range(n_freqs - 1)])
        self.register_buffer("freqs", freqs, persistent=False)
        width = 2 * n_freqs
        self.mlp = nn.Sequential(
            nn.Linear(width, 128),
            activation(act),
            nn.Linear(128, 128),
            activation(act),
            nn.Linear(128, 128),
            activation(act),
            nn.Linear(128, out),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        phases = t.reshape(-1, 1).float() * self.freqs
        features = torch.cat([phases.sin(), phases.cos() - 1.0], dim=1)
        return self.mlp(features)


class CNN(nn.Module):
    """One ConvBlock per entry of `hidden`, then Conv2d(k=3) back to one channel.

    The time embedding is added, broadcast over all pixels, to the first block's output.
    """

    def __init__(
        self, hidden: tuple[int, ...] = (16, 32, 32, 16), act: str = "GELU", in_channels: int = 1, size: int = 28
    ):
        super().__init__()
        channels = (in_channels, *hidden)
        self.blocks = nn.ModuleList(ConvBlock(a, b, act, size) for a, b in zip(channels[:-1], channels[1:]))
        self.out = nn.Conv2d(hidden[-1], in_channels, 3, padding=1)
        self.time = TimeEmbedding(hidden[0], act)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 28, 28); t: (N,) times already scaled to [0, 1]."""
        h = self.blocks[0](x) + self.time(t)[:, :, None, None]
        for block in self.blocks[1:]:
            h = block(h)
        return self.out(h)


class ResBlock(nn.Module):
    """GroupNorm -> activation -> Conv2d(k=3), plus the block's projection of the time embedding,
    then GroupNorm -> activation -> Conv2d(k=3); added to the input (through a 1x1 conv where the
    channel count changes)."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, act: str):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(UNET_GROUPS, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(UNET_GROUPS, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.act = activation(act)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x))) + self.time(emb)[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return h + self.skip(x)


class UNet(nn.Module):
    """A small U-Net over three resolutions, 28, 14 and 7 pixels, with `hidden` = (c0, c1, c2) channels.

    Down: Conv2d(k=3) 1 -> c0, ResBlock c0 -> c0 at 28 (skip s0), 2x2 average pooling, ResBlock
    c0 -> c1 at 14 (skip s1), average pooling, ResBlock c1 -> c2 at 7. Up: nearest-neighbour x2 and
    Conv2d(k=3) c2 -> c1, concatenated with s1, ResBlock 2 c1 -> c1 at 14; nearest x2 and Conv2d c1 -> c0,
    concatenated with s0, ResBlock 2 c0 -> c0 at 28; GroupNorm -> activation -> Conv2d(k=3) c0 -> 1.
    The CNN's TimeEmbedding (c0 features) enters every ResBlock through the block's own linear layer.
    `act` is used everywhere (the presets choose SiLU); GroupNorm has 8 groups, so every entry of
    `hidden` must be a multiple of 8 (config.check_net). The study's (16, 32, 64): 179,969 parameters
    and about 57 MFLOP per image (`describe`), against the CNN's 291,217 and 159; (32, 64, 128):
    600,705 and about 226.
    """

    def __init__(self, hidden: tuple[int, ...] = (32, 64, 128), act: str = "SiLU", in_channels: int = 1):
        super().__init__()
        check_hidden(hidden)
        check_net("unet", hidden)
        c0, c1, c2 = hidden
        self.time = TimeEmbedding(c0, act)
        self.inp = nn.Conv2d(in_channels, c0, 3, padding=1)
        self.down0 = ResBlock(c0, c0, c0, act)
        self.down1 = ResBlock(c0, c1, c0, act)
        self.bottom = ResBlock(c1, c2, c0, act)
        self.pool = nn.AvgPool2d(2)
        self.up1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c2, c1, 3, padding=1))
        self.dec1 = ResBlock(2 * c1, c1, c0, act)
        self.up0 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c1, c0, 3, padding=1))
        self.dec0 = ResBlock(2 * c0, c0, c0, act)
        self.out = nn.Sequential(
            nn.GroupNorm(UNET_GROUPS, c0), activation(act), nn.Conv2d(c0, in_channels, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 28, 28); t: (N,) times already scaled to [0, 1]."""
        emb = self.time(t)
        s0 = self.down0(self.inp(x), emb)  # 28 x 28
        s1 = self.down1(self.pool(s0), emb)  # 14 x 14
        h = self.bottom(self.pool(s1), emb)  # 7 x 7
        h = self.dec1(torch.cat([self.up1(h), s1], dim=1), emb)
        h = self.dec0(torch.cat([self.up0(h), s0], dim=1), emb)
        return self.out(h)


def network(cfg) -> nn.Module:
    """The network a model configuration names: its `net` ("cnn" or "unet"), `hidden` and `activation`."""
    check_choice("net", cfg.net, NETS)
    if cfg.net == "unet":
        return UNet(cfg.hidden, cfg.activation)
    return CNN(cfg.hidden, cfg.activation)


@torch.no_grad()
def describe(net: nn.Module, size: int = 28) -> dict:
    """{"parameters": trainable parameter count, "mflops_per_image": float}: the FLOPs of one forward
    pass on one size x size image, as torch.utils.flop_counter.FlopCounterMode counts them (matrix
    products and convolutions, a multiply-add being 2 FLOPs; norms and activations are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    p = next(net.parameters())
    x = torch.zeros((1, 1, size, size), device=p.device, dtype=p.dtype)
    t = torch.full((1,), 0.5, device=p.device, dtype=p.dtype)
    counter = FlopCounterMode(display=False)
    with counter:
        net(x, t)
    return {
        "parameters": sum(q.numel() for q in net.parameters() if q.requires_grad),
        "mflops_per_image": counter.get_total_flops() / 1e6,
    }
