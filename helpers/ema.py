"""An exponential moving average of a model's weights (Polyak averaging, as in DDPM and DDIM).

`EMA(model, decay)` keeps a shadow copy of the model's state. After each optimiser step,
`update(model)` moves every floating-point parameter's shadow towards the new value,
shadow <- d * shadow + (1 - d) * param, and copies buffers (and any non-float parameter) as they
are. With `warmup` the decay starts low, d = min(decay, (1 + n) / (10 + n)) after n updates, so the
average is not dominated by the random initial weights in short runs.

Evaluate the averaged weights with `with ema.applied(model): ...`, which swaps them in and restores
the raw weights exactly afterwards. `state_dict()` holds only tensors and plain numbers, so a
checkpoint with it loads under `torch.load(weights_only=True)`, and a resumed run continues the
average bit for bit.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .config import check_float


class EMA:
    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        check_float("ema_decay", decay, 0.0, 1.0)
        self.decay, self.warmup, self.updates = float(decay), bool(warmup), 0
        self.averaged = {name for name, p in model.named_parameters() if p.is_floating_point()}
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        """The decay the next `update` uses."""
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    def _pairs(self, model: nn.Module) -> tuple[list, list]:
        """(shadow, value) lists of the averaged parameters; every other entry (buffers) is copied."""
        shadows, values = [], []
        for k, v in model.state_dict().items():
            if k in self.averaged:
                shadows.append(self.shadow[k])
                values.append(v)
            else:
                self.shadow[k].copy_(v)
        return shadows, values

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """shadow <- d * shadow + (1 - d) * param for the averaged parameters, in two foreach calls
        (one kernel launch per group of tensors on a GPU instead of two per tensor); the same two
        roundings per element as shadow.mul_(d).add_(param, alpha=1 - d), so the same bits."""
        d = self.current_decay()
        shadows, values = self._pairs(model)
        if shadows:
            torch._foreach_mul_(shadows, d)
            torch._foreach_add_(shadows, values, alpha=1 - d)
        self.updates += 1

    @torch.no_grad()
    def update_on_device(self, model: nn.Module, updates: torch.Tensor) -> None:
        """`update` with the decay computed on the device from `updates` (a 0-d float tensor holding
        `self.updates`, advanced here): no host value changes from one call to the next, so the
        update can be captured in a CUDA graph and replayed. The caller advances `self.updates`."""
        d = (
            torch.clamp((1 + updates) / (10 + updates), max=self.decay)
            if self.warmup
            else updates.new_tensor(self.decay)
        )
        shadows, values = self._pairs(model)
        if shadows:
            torch._foreach_mul_(shadows, d)
            torch._foreach_add_(shadows, torch._foreach_mul(values, 1 - d))
        updates.add_(1)

    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's weights with the averaged ones."""
        model.load_state_dict(self.shadow)

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        """Evaluate with the averaged weights inside the block; the raw ones come back after it."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            model.load_state_dict(raw)

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "updates": self.updates,
            "shadow": {k: v.clone() for k, v in self.shadow.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        # A checkpoint from a different setting would silently change the average: refuse it.
        if (state["decay"], state["warmup"]) != (self.decay, self.warmup):
            raise ValueError(
                f"ema_decay={state['decay']!r} (warmup={state['warmup']!r}) in the saved state is "
                f"not allowed here; expected ema_decay={self.decay!r} (warmup={self.warmup!r})"
            )
        if set(state["shadow"]) != set(self.shadow):
            raise ValueError(
                f"the saved EMA state has parameters {sorted(state['shadow'])}; expected {sorted(self.shadow)}"
            )
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
        self.updates = int(state["updates"])
