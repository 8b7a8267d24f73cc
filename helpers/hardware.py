"""What the machine can do, and the speed options chosen from it (never from one machine's benchmark).

Device: "auto" picks a CUDA GPU, then Apple's MPS, then the CPU. Whatever MPS cannot do (float64
above all: the metrics' statistics, the DDIM schedule, the prior's EM) runs on the CPU by design;
those places move their tensors to the CPU before they widen them to float64.

Precision: reduced precision pays only where the hardware computes it natively.
- CUDA: bf16 from compute capability 8.0 (A100, H100/H200, RTX 30xx and later). Below that (7.x:
  V100, T4, RTX 20xx) torch.cuda.is_bf16_supported() still answers True, because bf16 is emulated
  there, slowly; those GPUs have fast fp16 tensor cores instead, so "auto" picks fp16 autocast with
  a gradient scaler ("fp16"). Older GPUs get fp32.
- CPU: bf16 only with AVX-512 BF16 or AMX. Elsewhere PyTorch emulates it and training gets many
  times slower (measured: 15x on an AVX2-only CPU), so there the answer is fp32.
- MPS: fp32 (its autocast and gradient scaling are not relied upon by this study).

`autocast(device_type, precision)` and `grad_scaler(device_type, precision)` are the two pieces the
engine wraps its steps in; `configure(device)` sets the backend switches once per process.
"""

from __future__ import annotations

import contextlib
import os
import platform
from functools import lru_cache

from .config import PRECISION_CHOICES, PRECISIONS, check_choice

NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
CUDA_BF16_FROM = (8, 0)  # first compute capability with bf16 tensor cores
CUDA_FP16_FROM = (7, 0)  # first compute capability with fp16 tensor cores (Volta)


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mps_available() -> bool:
    """Whether Apple's Metal backend can be used (False on builds without it)."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(device=None):
    """The torch.device to compute on: "auto" (or None) picks CUDA when available, then MPS, else
    the CPU; "cuda" and "mps" must be available; a torch.device is returned as it is."""
    import torch

    if isinstance(device, torch.device):
        return device
    device = "auto" if device is None else device

    check_choice("device", device, DEVICE_CHOICES)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device='cuda' is not allowed here: this machine has no usable CUDA GPU; "
            f"expected one of {list(available_devices())}"
        )
    if device == "mps" and not mps_available():
        raise ValueError(
            "device='mps' is not allowed here: this machine has no usable MPS backend; "
            f"expected one of {list(available_devices())}"
        )
    return torch.device(device)


def available_devices() -> tuple[str, ...]:
    """The entries of DEVICE_CHOICES that work on this machine."""
    import torch

    return ("auto", "cpu") + (("cuda",) if torch.cuda.is_available() else ()) + (("mps",) if mps_available() else ())


def cuda_capability(index: int = 0) -> tuple[int, int] | None:
    """(major, minor) compute capability of CUDA device `index`, None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability(index))


def capabilities() -> dict:
    """A summary for benchmarks, logs and the report's stamp."""
    import torch

    flags = cpu_flags()
    out = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "avx2": "avx2" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "cuda": torch.cuda.is_available(),
        "mps": mps_available(),
    }
    if out["cuda"]:
        cap = cuda_capability()
        out["gpu"] = torch.cuda.get_device_name(0)
        out["gpus"] = torch.cuda.device_count()
        out["compute_capability"] = f"{cap[0]}.{cap[1]}"
        out["cuda_bf16_native"] = cap >= CUDA_BF16_FROM
        out["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        out["torch_cuda"] = torch.version.cuda
    return out


def native_bf16(device_type: str, flags: frozenset[str] | set[str], cuda_bf16: bool) -> bool:
    """Whether `device_type` ("cpu" or "cuda") computes bf16 natively (`cuda_bf16`: the GPU's answer,
    see `choose_precision` for how it is decided)."""
    if device_type == "cuda":
        return bool(cuda_bf16)
    if device_type == "cpu":
        return any(f in flags for f in NATIVE_BF16_CPU_FLAGS)
    return False


def _cuda_reason(cap: tuple[int, int] | None) -> str:
    return f"the GPU (compute capability {cap[0]}.{cap[1]})" if cap else "the GPU"


def choose_precision(
    requested: str,
    device_type: str,
    flags: frozenset[str] | set[str] | None = None,
    cuda_bf16: bool | None = None,
    capability: tuple[int, int] | None = None,
) -> tuple[str, str]:
    """(precision, reason) for training and sampling: "fp32", "bf16" or "fp16".

    requested "fp32" is always honoured (exact reproduction); "bf16" and "fp16" are honoured only
    where the device computes them natively (elsewhere they are a trap: refused with fp32 and the
    reason); "auto" picks bf16 where native, else fp16 on a CUDA GPU with fp16 tensor cores, else fp32.

    On CUDA the answer comes from the compute capability (`capability`, default: the current GPU's),
    not from torch.cuda.is_bf16_supported(), which is True where bf16 is only emulated. `cuda_bf16`
    overrides the bf16 part of that decision (for tests and callers that know better); `flags` are the
    CPU's feature flags (default: this machine's).
    """

    check_choice("precision", requested, PRECISION_CHOICES)
    if requested == "fp32":
        return "fp32", "fp32 requested"
    if device_type == "cuda":
        if capability is None:
            capability = cuda_capability()
        cap = tuple(capability) if capability is not None else None
        bf16 = (cap is not None and cap >= CUDA_BF16_FROM) if cuda_bf16 is None else bool(cuda_bf16)
        fp16 = cap is not None and cap >= CUDA_FP16_FROM
        where = _cuda_reason(cap)
        if requested in ("auto", "bf16") and bf16:
            return "bf16", f"{where} computes bf16 natively"
        if requested in ("auto", "fp16") and fp16:
            why = "" if requested == "fp16" else ", bf16 only emulated"
            return "fp16", f"{where} has fp16 tensor cores{why}: fp16 autocast with a gradient scaler"
        return "fp32", (
            f"{requested} {'requested' if requested != 'auto' else 'possible'} but {where} "
            "has no native reduced precision for it (emulation is slower): fp32"
        )
    if device_type == "mps":
        return "fp32", (
            f"{'bf16 or fp16 possible' if requested == 'auto' else requested + ' requested'} "
            "but mps autocast is not used by this study: fp32"
        )
    if flags is None:
        flags = cpu_flags()
    if requested in ("auto", "bf16") and native_bf16(device_type, flags, False):
        where = "this CPU (" + ", ".join(f for f in NATIVE_BF16_CPU_FLAGS if f in flags) + ")"
        return "bf16", f"{where} computes bf16 natively"
    if requested == "fp16":
        return "fp32", f"fp16 requested but {device_type} has no fast fp16 (it is emulated): fp32"
    return "fp32", (
        f"bf16 {'requested' if requested == 'bf16' else 'possible'} but {device_type} has no "
        "native bf16 (emulated bf16 is many times slower): fp32"
    )


_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def autocast(device_type: str, precision: str):
    """The autocast context of a precision: bf16 or fp16 autocast, or a disabled autocast for fp32
    (which, like the engine's, also switches off an autocast around it)."""
    import torch

    check_choice("precision", precision, PRECISIONS)
    if precision == "fp32":
        available = getattr(torch.amp, "is_autocast_available", None)
        if available is not None and not available(device_type):
            return contextlib.nullcontext()
        return torch.autocast(device_type, enabled=False)
    return torch.autocast(device_type, dtype=getattr(torch, _DTYPES[precision]))


def grad_scaler(device_type: str, precision: str):
    """A torch.amp.GradScaler, enabled only for fp16 (bf16 has fp32's range and needs none). A disabled
    one passes everything through: scale(loss) is loss, step(opt) is opt.step(), update() does nothing."""
    import torch

    check_choice("precision", precision, PRECISIONS)
    enabled = precision == "fp16"
    try:
        return torch.amp.GradScaler(device_type, enabled=enabled)
    except (RuntimeError, ValueError, TypeError):
        if enabled:
            raise
        return torch.amp.GradScaler("cpu", enabled=False)


# Images per sampling batch, by device type: a documented rule, never a timing taken at run time. The
# batch decides the order in which the sampler's noise is drawn, so it is part of the cache key of every
# sample (grids, per-epoch metrics, final numbers, DDIM), and a choice timed at run time could differ
# between two runs on one machine and so change their numbers.
# - CPU: 64. The fastest batch moves with the CPU, the network and the precision (measured side by side:
#   16 on one CPU in fp32, 256 on another; 64 to 256 in bf16; README: Speed); 64 was within about 10%
#   of the fastest in bf16 for both networks, and either end of the range lost up to 30% somewhere.
# - CUDA: 1000 images at once (the study's networks need a few hundred MB for that; smaller batches
#   leave the GPU waiting on kernel launches). MPS: 256.
SAMPLING_BATCH = {"cpu": 64, "cuda": 1000, "mps": 256}


def sampling_batch(device) -> int:
    """Images per batch when sampling on `device` (a torch.device, a device type or "auto")."""
    kind = device.type if hasattr(device, "type") else pick_device(device).type
    check_choice("device", kind, SAMPLING_BATCH)
    return SAMPLING_BATCH[kind]


def configure(device) -> dict:
    """Backend switches for a process that computes on `device`; returns what was set.

    CUDA: cuDNN autotuning (torch.backends.cudnn.benchmark), which times the convolution algorithms
    once per input shape and keeps the fastest; the study's shapes are fixed, so it pays after the
    first steps. Results then match from run to run only to floating-point noise, as on any GPU.
    Nothing is changed on the CPU (where the study is bitwise deterministic) or on MPS.
    """
    import torch

    dev = pick_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        return {"cudnn.benchmark": True}
    return {}
