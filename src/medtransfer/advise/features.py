"""Frozen penultimate features of the user's training images, one forward pass per candidate.

What LogME and the probe score is what the backbone already "sees" in the target images before
any fine-tuning: the pooled features that feed the classifier head. One pass in eval mode, in
batches, without gradients, is seconds on a CPU for a few hundred small images. The pass is also
timed: it is the unit the search's time plan is estimated from.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import MedtransferError, reason_of
from ..models import create_model
from ..models.init_resolve import resolve_init
from ..train.augment import normalise
from ..train.inputs import check_images, to_device
from ..train.device import seed_everything
from .candidates import Candidate


@dataclass(frozen=True)
class CandidateFeatures:
    """A candidate's (images, features) matrix, or why there is none; ``seconds`` is the build + pass time."""
    name: str
    features: np.ndarray | None
    seconds: float
    forward_seconds_per_image: float | None = None
    error: str | None = None


def penultimate_features(model, images: np.ndarray, batch_size: int = 64, device=None) -> np.ndarray:
    """The backbone's pooled features (n, F) of uint8 (n, S, S) images, float64, in eval mode without gradients."""
    check_images(images, "images to featurise")
    device = device or torch.device("cpu")
    model.to(device).eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = normalise(to_device(images[start:start + batch_size], device))
            chunks.append(model.backbone(x).float().reshape(len(x), -1).cpu())
    if not chunks:
        return np.zeros((0, model.num_features))
    return torch.cat(chunks).numpy().astype(np.float64)


def candidate_features(candidates: list[Candidate], images: np.ndarray, num_outputs: int, *, seed: int,
                       dropout: float = 0.0, batch_size: int = 64, device=None,
                       log: Callable[[str], None] = print) -> dict[str, CandidateFeatures]:
    """Features of ``images`` under each usable candidate's backbone (a candidate that fails to build keeps
    its one-line reason, and the others still get features).

    Each model is built right after seeding with ``seed``, exactly as a training run builds it, so the
    scratch candidate's features are those of the very network a scratch recipe would start from.
    """
    out: dict[str, CandidateFeatures] = {}
    for cand in candidates:
        if not cand.available:
            continue
        started = time.perf_counter()
        try:
            seed_everything(seed)
            model = create_model(cand.arch, num_outputs, init=resolve_init(cand.init), dropout=dropout, log=lambda _line: None)
            built = time.perf_counter()
            feats = penultimate_features(model, images, batch_size, device)
        except (MedtransferError, RuntimeError, ValueError) as err:   # torch's shape errors are RuntimeErrors
            why = reason_of(err)
            out[cand.name] = CandidateFeatures(cand.name, None, time.perf_counter() - started, error=why)
            log(f"features {cand.name}: unusable ({why})")
            continue
        done = time.perf_counter()
        per_image = (done - built) / max(len(images), 1)
        out[cand.name] = CandidateFeatures(cand.name, feats, done - started, per_image)
        log(f"features {cand.name} ({cand.arch}): {feats.shape[0]} images x {feats.shape[1]} in {done - started:.1f} s")
    return out
