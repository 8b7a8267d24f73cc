"""The noise-prediction CNN of the course's starter code (SPEC section 1), and a small U-Net beside it.

A network only maps (image batch, time in [0, 1]) to an image batch: it knows nothing of the
diffusion process that trains it, so the same classes serve the DDPM (predicting noise) and cold
diffusion (predicting the clean image). `network(cfg)` builds the one a configuration names (its
`net`: "cnn", the seed's, or "unet", beyond the seed); `describe(net)` reports what the report says about it:
its size, kernels, resolutions and receptive field.
"""

from __future__ import annotations

import copy
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
            nn.Conv2d(c_in, c_out, 7, padding=3), nn.LayerNorm((c_out, size, size)), activation(act)
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


# Module types that act on each pixel (or pool statistics) without widening what a pixel is computed
# from; the receptive-field probe replaces them by the identity.
_POINTWISE = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.Dropout, nn.Identity)


class _WindowConv(nn.Module):
    """A convolution's footprint: the sum over input channels, then a kernel of ones with the
    convolution's size, stride, padding and dilation, to one channel."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError(f"describe: no receptive-field rule for padding_mode={conv.padding_mode!r}")
        self.kernel = torch.ones((1, 1, *conv.kernel_size))
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x.sum(1, keepdim=True), self.kernel, None, self.stride, self.padding, self.dilation)


class _NoTime(nn.Module):
    """A Linear layer of the time path, in the probe: zero, one feature (the time never depends on the
    image, and one feature keeps every feature map of the probe at one channel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros((x.shape[0], 1))


def _probe_copy(net: nn.Module) -> nn.Module:
    """A CPU copy of `net` in which every output pixel is a sum, with positive weights, of the
    input pixels it depends on through convolutions, poolings and upsamplings: each convolution
    becomes its footprint (`_WindowConv`, one channel: the window does not depend on the channel
    count), normalisations and activations the identity, the time path zero. The gradient of an output pixel is then
    positive exactly on the pixels it is computed from (no cancellation can hide one)."""
    probe = copy.deepcopy(net).to("cpu", torch.float32)

    def strip(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(module, name, _WindowConv(child))
            elif isinstance(child, _POINTWISE) or type(child).__module__ == "torch.nn.modules.activation":
                setattr(module, name, nn.Identity())
            elif isinstance(child, nn.Linear):
                setattr(module, name, _NoTime())  # Linear layers only see the time
            elif isinstance(child, (nn.AvgPool2d, nn.Upsample)):
                continue  # as they are
            elif list(child.children()):
                strip(child)
            else:
                raise ValueError(f"describe: no receptive-field rule for {type(child).__name__}")

    strip(probe)
    return probe


def _windows(probe: nn.Module, size: int, rows: list[int]) -> list[tuple[int, int, int, int]]:
    """For each output pixel (i, i), i in `rows`, of a size x size input: the first and last row and
    column of the input pixels it is computed from, (row_lo, row_hi, col_lo, col_hi). One backward
    pass: every pixel is probed on its own image of a batch (the probe mixes no images)."""
    x = torch.zeros((len(rows), 1, size, size), requires_grad=True)
    with torch.enable_grad():
        y = probe(x, torch.zeros(len(rows)))
        (grad,) = torch.autograd.grad(y[torch.arange(len(rows)), 0, rows, rows].sum(), x)
    if not torch.isfinite(grad).all():
        raise ValueError("describe: the receptive-field probe overflowed")
    out = []
    for b in range(len(rows)):
        seen = grad[b, 0] > 0
        r, c = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
        box = (int(r[0]), int(r[-1]), int(c[0]), int(c[-1]))
        if int(seen.sum()) != (box[1] - box[0] + 1) * (box[3] - box[2] + 1):
            raise ValueError("describe: an output pixel's input window is not a rectangle")
        out.append(box)
    return out


def receptive_field(net: nn.Module, size: int = 28) -> dict:
    """Which input pixels each output pixel is computed from through the convolutions, poolings and
    upsamplings (normalisation statistics aside), probed on the network itself:
    `receptive_field`: the side of the square window of one output pixel away from the image's
    borders (a larger image is probed, so the window is not cut off);
    for a size x size image, `view_smallest` / `view_largest`: the side of the smallest and largest
    part of the image one output pixel is computed from (a corner pixel's is the smallest), and
    `whole_image_pixels` of `output_pixels`: the output pixels computed from every pixel of the image.
    Rows and columns are probed along the diagonal; the windows are separable (square kernels and
    poolings), checked at the corner pixel (0, size - 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the probe's tensors are tiny: more threads only wait for one another
    try:
        return _receptive_field(_probe_copy(net), size)
    finally:
        torch.set_num_threads(threads)


def _receptive_field(probe: nn.Module, size: int) -> dict:
    big = 4 * size
    middle = _windows(probe, big, list(range(big // 2, big // 2 + 8)))
    if any(lo == 0 or hi == big - 1 for lo, hi, _, _ in middle):
        raise ValueError(f"describe: the window reaches the border of a {big} x {big} probe")
    widths = {hi - lo + 1 for lo, hi, _, _ in middle} | {hi - lo + 1 for _, _, lo, hi in middle}
    diagonal = _windows(probe, size, list(range(size)))
    x = torch.zeros((1, 1, size, size), requires_grad=True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(probe(x, torch.zeros(1))[0, 0, 0, size - 1], x)
    corner = grad[0, 0] > 0
    r, c = diagonal[0][:2], diagonal[size - 1][2:]
    expected = torch.zeros_like(corner)
    expected[r[0] : r[1] + 1, c[0] : c[1] + 1] = True
    if not torch.equal(corner, expected):
        raise ValueError("describe: the network's windows are not separable into rows and columns")
    sides = [hi - lo + 1 for lo, hi, _, _ in diagonal]
    whole_rows = sum(1 for lo, hi, _, _ in diagonal if lo == 0 and hi == size - 1)
    return {
        "receptive_field": max(widths),
        "view_smallest": min(sides),
        "view_largest": max(sides),
        "whole_image_pixels": whole_rows * whole_rows,
        "output_pixels": size * size,
    }


@torch.no_grad()
def describe(net: nn.Module, size: int = 28) -> dict:
    """What the report states about a network, computed from the module (plain JSON values):
    - `parameters`: trainable parameter count; `mflops_per_image`: the FLOPs of one forward pass on
      one size x size image, as torch.utils.flop_counter.FlopCounterMode counts them (matrix products
      and convolutions, a multiply-add being 2 FLOPs; norms and activations are not counted);
    - `convolutions`: one entry per Conv2d in the order a forward pass runs them, `kernel` (side),
      `resolution` (side of the feature map it reads), `in` and `out` channels;
    - `resolutions`: the feature-map sides the convolutions work at, largest first;
    - `norm_whole_map`: whether every normalisation layer pools its statistics over whole feature
      maps (the CNN's LayerNorm over (C, 28, 28), the U-Net's GroupNorm), so that a mean and a
      variance of the whole map reach every pixel;
    - `time_frequencies`: the fixed frequencies of the time embedding;
    - and `receptive_field`'s window sizes.
    """
    from torch.utils.flop_counter import FlopCounterMode

    p = next(net.parameters())
    x = torch.zeros((1, 1, size, size), device=p.device, dtype=p.dtype)
    t = torch.full((1,), 0.5, device=p.device, dtype=p.dtype)
    convs, whole = [], []

    def conv(m, inp, out):
        convs.append(
            {"kernel": m.kernel_size[0], "resolution": inp[0].shape[-1], "in": m.in_channels, "out": m.out_channels}
        )

    def norm(m, inp, out):
        whole.append(isinstance(m, nn.GroupNorm) or tuple(m.normalized_shape[-2:]) == tuple(inp[0].shape[-2:]))

    hooks = [
        m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else norm)
        for m in net.modules()
        if isinstance(m, (nn.Conv2d, nn.LayerNorm, nn.GroupNorm))
    ]
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            net(x, t)
    finally:
        for h in hooks:
            h.remove()
    freqs = [m.freqs.numel() for m in net.modules() if isinstance(m, TimeEmbedding)]
    return {
        "parameters": sum(q.numel() for q in net.parameters() if q.requires_grad),
        "mflops_per_image": counter.get_total_flops() / 1e6,
        "convolutions": convs,
        "resolutions": sorted({c["resolution"] for c in convs}, reverse=True),
        "norm_whole_map": bool(whole) and all(whole),
        "time_frequencies": freqs[0] if freqs else 0,
        **receptive_field(net, size),
    }
