"""Degradations D(x, t) for diffusion models: anything with a number of steps `T` and a `degrade`.

Row/column averaging (SPEC section 2, after Bansal et al. 2022, "Cold Diffusion"): step t replaces the
first t rows (or columns, or bands of 4 of them) of a fixed schedule by their mean. The operator is
deterministic, and a band that is already constant is left unchanged by averaging it again, so
D(D(x, s), t) = D(x, max(s, t)).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from .config import COLD_AXES as AXES
from .config import COLD_GROUPS as GROUPS
from .config import COLD_SCHEDULES as SCHEDULES
from .config import check_choice, check_int

SIZE = 28  # MNIST rows = columns
CHECK_EVERY = 256  # degrade calls on an accelerator between two reads of the accumulated range check


@runtime_checkable
class Degradation(Protocol):
    """A forward process with steps 0..T; `t` holds one integer step per image of the batch `x`.

    `helpers.ddpm.GaussianNoising` is one (its `degrade` also takes the noise `eps`).
    """

    T: int

    def degrade(self, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


def _checks_at_once(device: torch.device) -> bool:
    """Whether a range check on `device` is read at once (on the CPU it costs no synchronisation)."""
    return device.type == "cpu"


def outside_in(n: int) -> list[int]:
    """0, n-1, 1, n-2, ...: the outermost lines first (1-indexed: 1, 28, 2, 27, ..., 14, 15)."""
    return [i for pair in zip(range(n), reversed(range(n))) for i in pair][:n]


def inside_out(n: int) -> list[int]:
    """The middle line c = (n-1)//2 first, then c+1, c-1, c+2, c-2, ... (1-indexed: 14, 15, 13, ..., 1, 28)."""
    c = (n - 1) // 2
    return sorted(range(n), key=lambda i: 2 * abs(i - c) - (i > c))


def schedule_order(schedule: str, n: int, seed: int = 0) -> torch.Tensor:
    """The order (0-indexed, int64, length n) in which the n lines or bands are averaged."""
    check_choice("schedule", schedule, SCHEDULES)
    if schedule == "random":
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return torch.tensor(outside_in(n) if schedule == "outside-in" else inside_out(n))


class RowColumnAveraging(nn.Module):
    """D(x, t): the first t bands of `order` (a band = `group` adjacent rows or columns) set to their mean.

    `order` is a persistent buffer, so a random schedule is saved and restored with the model.
    """

    def __init__(self, axis: str = "columns", group: int = 1, schedule: str = "random", schedule_seed: int = 0):
        super().__init__()
        check_choice("axis", axis, AXES)
        check_choice("group", group, GROUPS)
        check_choice("schedule", schedule, SCHEDULES)
        check_int("schedule_seed", schedule_seed, 0)
        self.axis, self.group, self.schedule = axis, group, schedule
        self.T = SIZE // group
        self.register_buffer("order", schedule_order(schedule, self.T, schedule_seed))

    def extra_repr(self) -> str:
        return f"axis={self.axis!r}, group={self.group}, schedule={self.schedule!r}, T={self.T}"

    def _check_images(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[-2:] != (SIZE, SIZE):
            raise ValueError(f"images must have shape (N, C, {SIZE}, {SIZE}); got {tuple(x.shape)}")

    def means(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of every band, (N, C, T): all that is left of an image in D(x, T)."""
        self._check_images(x)
        lines = x.mean(-1) if self.axis == "rows" else x.mean(-2)
        return lines.unflatten(-1, (self.T, self.group)).mean(-1)

    def expand(self, means: torch.Tensor) -> torch.Tensor:
        """Inverse of `means` on fully degraded images: (N, C, T) -> (N, C, 28, 28)."""
        lines = means.repeat_interleave(self.group, dim=-1)
        lines = lines[..., None] if self.axis == "rows" else lines[..., None, :]
        return lines.expand(*means.shape[:-1], SIZE, SIZE).contiguous()

    def line_step(self) -> torch.Tensor:
        """For each of the 28 rows (columns), the step 1..T at which it is averaged."""
        step = torch.empty_like(self.order)
        step[self.order] = torch.arange(1, self.T + 1, device=self.order.device)
        return step.repeat_interleave(self.group)

    def _check_steps(self, t: torch.Tensor) -> None:
        """Refuse steps outside 0..T. On the CPU at once. On an accelerator, reading the answer back
        would make the host wait for the device at every call (twice per sampling step), so the answer
        is accumulated there and read every CHECK_EVERY calls, and by `check_pending()`."""
        if _checks_at_once(t.device):
            bad = t[(t < 0) | (t > self.T)]
            if len(bad):
                raise ValueError(f"t={sorted(set(bad.tolist()))} is out of range; expected steps in 0..{self.T}")
            return
        flag = ((t < 0) | (t > self.T)).any()
        pending = self.__dict__.get("_pending")
        if pending is not None and pending.device != flag.device:
            self.check_pending()
            pending = None
        self.__dict__["_pending"] = flag if pending is None else pending | flag
        calls = self.__dict__.get("_unchecked", 0) + 1
        self.__dict__["_unchecked"] = calls
        if calls >= CHECK_EVERY:
            self.check_pending()

    def check_pending(self) -> None:
        """Read the range checks accumulated on an accelerator (one host synchronisation)."""
        pending = self.__dict__.pop("_pending", None)
        calls = self.__dict__.pop("_unchecked", 0)
        if pending is not None and bool(pending):
            raise ValueError(
                f"a step t outside 0..{self.T} was given in one of the last {calls} calls of degrade on the accelerator"
            )

    def degrade(self, x: torch.Tensor, t, generator: torch.Generator | None = None) -> torch.Tensor:
        """D(x, t) for a batch (N, C, 28, 28), one step per image (int tensor (N,), or an int for all).

        Deterministic: `generator` is accepted for the Degradation protocol and ignored.
        """
        self._check_images(x)
        if not torch.is_tensor(t):
            if not 0 <= int(t) <= self.T:
                raise ValueError(f"t={[int(t)]} is out of range; expected steps in 0..{self.T}")
            t = torch.full((x.shape[0],), int(t), device=x.device)
        elif t.shape != (x.shape[0],) or t.is_floating_point():
            raise ValueError(
                f"t must be an integer tensor of shape ({x.shape[0]},), one step per "
                f"image; got {t.dtype} of shape {tuple(t.shape)}"
            )
        else:
            self._check_steps(t)
        done = self.line_step() <= t[:, None]  # (N, 28): which lines are averaged in each image
        mean = self.means(x).repeat_interleave(self.group, dim=-1)  # (N, C, 28): each line's band mean
        if self.axis == "rows":
            return torch.where(done[:, None, :, None], mean[..., None], x)
        return torch.where(done[:, None, None, :], mean[..., None, :], x)


def degrade_loop(op: RowColumnAveraging, x: torch.Tensor, t) -> torch.Tensor:
    """Reference implementation, the way a student writes it: per image, per step, per row (column).

    Slow on purpose; tests compare it with `RowColumnAveraging.degrade`, the benchmark times it.
    """
    out = x.clone()
    steps = [int(t)] * x.shape[0] if not torch.is_tensor(t) else t.tolist()
    for i, t_i in enumerate(steps):
        if not 0 <= t_i <= op.T:
            raise ValueError(f"t={t_i} is out of range; expected steps in 0..{op.T}")
        for band in op.order[:t_i].tolist():
            lines = range(band * op.group, (band + 1) * op.group)
            for c in range(x.shape[1]):
                if op.axis == "rows":
                    mean = sum(x[i, c, r, :].sum() for r in lines) / (op.group * SIZE)
                    for r in lines:
                        out[i, c, r, :] = mean
                else:
                    mean = sum(x[i, c, :, k].sum() for k in lines) / (op.group * SIZE)
                    for k in lines:
                        out[i, c, :, k] = mean
    return out
