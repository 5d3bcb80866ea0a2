"""Input normalisation and light, batched augmentation on the model's device.

Small medical datasets overfit quickly, so training uses mild geometric and intensity
jitter that keeps anatomy plausible (±10° rotation, 0.9-1.1 scale, ±5% shift,
±10% brightness/contrast). Everything works on the whole batch tensor at once
(one affine_grid + grid_sample), with no per-image Python, and all random draws
come from one seeded torch.Generator on the images' device (no host-device copies,
so no stalls on a GPU) and runs repeat exactly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..models.inputs import GREY_MEAN, GREY_STD   # the input convention weights are loaded for

MAX_ROTATION_DEG = 10.0
SCALE_RANGE = (0.9, 1.1)
MAX_SHIFT = 0.05          # fraction of the image side
MAX_INTENSITY = 0.10      # brightness and contrast, relative


def normalise(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (B,S,S) or (B,1,S,S) -> float32 (B,1,S,S) as ``(x/255 - 0.449) / 0.226``."""
    x = batch.float()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return (x / 255.0 - GREY_MEAN) / GREY_STD


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=generator.device)


def random_affine(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rotate, scale and shift every image of a (B,C,H,W) float batch by its own random amount.

    Areas moved in from outside the image are filled with black (0), like the
    background of a radiograph.
    """
    b = x.shape[0]
    angle = _uniform(b, -MAX_ROTATION_DEG, MAX_ROTATION_DEG, generator) * (math.pi / 180.0)
    scale = _uniform(b, *SCALE_RANGE, generator)
    # affine_grid works in [-1, 1] coordinates, so a 5% shift of the side is 0.1.
    shift = _uniform(2 * b, -2 * MAX_SHIFT, 2 * MAX_SHIFT, generator).view(b, 2)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def intensity_jitter(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-image brightness (multiplicative) and contrast (around the image mean) jitter on [0,1] data."""
    b = x.shape[0]
    brightness = _uniform(b, 1 - MAX_INTENSITY, 1 + MAX_INTENSITY, generator).to(x.device).view(b, 1, 1, 1)
    contrast = _uniform(b, 1 - MAX_INTENSITY, 1 + MAX_INTENSITY, generator).to(x.device).view(b, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean).mul(brightness).clamp_(0.0, 1.0)


def prepare_batch(batch: torch.Tensor, augment: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (B,S,S) on the device -> normalised float (B,1,S,S), augmented when asked."""
    if not augment:
        return normalise(batch)
    if generator is None:
        raise ValueError("augmentation needs a seeded torch.Generator")
    x = batch.float().unsqueeze(1) / 255.0 if batch.dim() == 3 else batch.float() / 255.0
    x = intensity_jitter(random_affine(x, generator), generator)
    return (x - GREY_MEAN) / GREY_STD
