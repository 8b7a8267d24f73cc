"""What the machine can do, and the speed options chosen from it (never from one machine's benchmark).

bf16 autocast pays only where the hardware computes in bf16 natively: a CUDA GPU with bf16 support,
or a CPU with AVX-512 BF16 or AMX. Elsewhere PyTorch emulates it and training gets many times
slower (measured: 15x on an AVX2-only CPU), so there the answer is always fp32.
"""
from __future__ import annotations

import os
import platform
from functools import lru_cache

NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


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


DEVICE_CHOICES = ("auto", "cpu", "cuda")


def pick_device(device=None):
    """The torch.device to compute on: "auto" (or None) picks CUDA when available, else the CPU;
    a torch.device is returned as it is."""
    import torch

    if isinstance(device, torch.device):
        return device
    device = "auto" if device is None else device
    from .config import check_choice

    check_choice("device", device, DEVICE_CHOICES)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def capabilities() -> dict:
    """A summary for benchmarks, logs and the report's stamp."""
    import torch

    flags = cpu_flags()
    out = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "cores": os.cpu_count(),
           "avx2": "avx2" in flags, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
           "cuda": torch.cuda.is_available()}
    if out["cuda"]:
        out["gpu"] = torch.cuda.get_device_name(0)
        out["cuda_bf16"] = bool(torch.cuda.is_bf16_supported())
    return out


def native_bf16(device_type: str, flags: frozenset[str] | set[str], cuda_bf16: bool) -> bool:
    """Whether `device_type` ("cpu" or "cuda") computes bf16 natively."""
    if device_type == "cuda":
        return bool(cuda_bf16)
    return any(f in flags for f in NATIVE_BF16_CPU_FLAGS)


def choose_precision(requested: str, device_type: str, flags: frozenset[str] | set[str] | None = None,
                     cuda_bf16: bool | None = None) -> tuple[str, str]:
    """(precision, reason) for training and sampling.

    requested "fp32" is always honoured (exact reproduction); "bf16" is honoured only where it is
    native (elsewhere it is a trap: refused with fp32 and the reason); "auto" picks bf16 where native.
    """
    from .config import PRECISION_CHOICES, check_choice

    check_choice("precision", requested, PRECISION_CHOICES)
    if requested == "fp32":
        return "fp32", "fp32 requested"
    if flags is None:
        flags = cpu_flags()
    if cuda_bf16 is None:
        import torch
        cuda_bf16 = device_type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if native_bf16(device_type, flags, cuda_bf16):
        where = "the GPU" if device_type == "cuda" else "this CPU (" + ", ".join(
            f for f in NATIVE_BF16_CPU_FLAGS if f in flags) + ")"
        return "bf16", f"{where} computes bf16 natively"
    return "fp32", (f"bf16 {'requested' if requested == 'bf16' else 'possible'} but {device_type} has no "
                    "native bf16 (emulated bf16 is many times slower): fp32")
