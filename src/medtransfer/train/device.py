"""Where a fit runs and how it repeats: the device, the seeds, and the per-device choices every training path shares.

Ordinary fits, packed fits and the LR range test all train through ``train.driver``; the choices that
depend on the device live here, once, so the paths cannot drift apart again. On CUDA: bf16 autocast,
channels_last weights and batches (what the tensor cores want), cuDNN autotuning, and the loss of a
step read only after the next step is queued (reading it at once would stall the queue). On the CPU:
fp32, deterministic kernels and every loss read at once, so the same seed gives the same numbers
(what a recipe comparison needs to be trusted).
"""
from __future__ import annotations

import random
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the GPU when there is one, else the CPU; an unusable name is a ConfigError."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"train.device: unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device: {name} requested but no CUDA GPU is available (use auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device: {name} requested but only {torch.cuda.device_count()} GPU(s) exist")
    elif device.type != "cpu":
        raise ConfigError(f"train.device: {name!r} is not supported (use auto, cpu, cuda or cuda:N)")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global RNGs (a scratch model's init and dropout masks draw from them)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def reproducible(device: torch.device):
    """Deterministic kernels on CPU (exact reruns); cuDNN autotuning on CUDA (speed). Restored after."""
    det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    bench = torch.backends.cudnn.benchmark
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn)
        torch.backends.cudnn.benchmark = bench


def device_autocast(device: torch.device):
    """bf16 autocast on CUDA (tensor cores, half the activation memory); plain fp32 elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def uses_channels_last(device: torch.device) -> bool:
    """NHWC is what cuDNN's bf16 convolutions are fastest in; on the CPU it would only change the rounding."""
    return device.type == "cuda"


def defers_loss_check(device: torch.device) -> bool:
    """On a GPU, step s's loss is checked after step s+1 is queued: reading it at once would stall."""
    return device.type != "cpu"


def place_model(model: nn.Module, device: torch.device) -> None:
    """Move ``model`` to ``device`` in the memory layout training uses there (undone by ``release_model``)."""
    model.to(device)
    if uses_channels_last(device):
        model.to(memory_format=torch.channels_last)


def release_model(model: nn.Module, device: torch.device) -> None:
    """Back to the default layout after training, so saved weights and later callers see ordinary tensors."""
    if uses_channels_last(device):
        model.to(memory_format=torch.contiguous_format)


def batch_layout(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A (B,C,H,W) batch in the layout of the weights ``place_model`` set (a no-op on the CPU)."""
    return x.contiguous(memory_format=torch.channels_last) if uses_channels_last(device) else x


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached, contiguous CPU copy of the state_dict (safe to keep while training goes on)."""
    return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}
