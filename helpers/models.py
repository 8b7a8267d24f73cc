"""The noise-prediction CNN of the course's starter code (SPEC section 1).

The network only maps (image batch, time in [0, 1]) to an image batch: it knows nothing of the
diffusion process that trains it, so the same class serves the DDPM (predicting noise) and cold
diffusion (predicting the clean image).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import ACTIVATIONS, check_choice


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
            nn.Linear(width, 128), activation(act),
            nn.Linear(128, 128), activation(act),
            nn.Linear(128, 128), activation(act),
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

    def __init__(self, hidden: tuple[int, ...] = (16, 32, 32, 16), act: str = "GELU",
                 in_channels: int = 1, size: int = 28):
        super().__init__()
        channels = (in_channels, *hidden)
        self.blocks = nn.ModuleList(
            ConvBlock(a, b, act, size) for a, b in zip(channels[:-1], channels[1:])
        )
        self.out = nn.Conv2d(hidden[-1], in_channels, 3, padding=1)
        self.time = TimeEmbedding(hidden[0], act)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 28, 28); t: (N,) times already scaled to [0, 1]."""
        h = self.blocks[0](x) + self.time(t)[:, :, None, None]
        for block in self.blocks[1:]:
            h = block(h)
        return self.out(h)
