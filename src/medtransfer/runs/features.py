"""Which runs read backbone features from the feature cache (``train.features``) instead of running the backbone.

A probe always does; a frozen run does when it does not augment (an augmented image has features of its own at
every step). Such a run gets the features of every image it will touch (training subset, validation split, test
split) before it trains, computing only those no earlier run has stored; it then trains its head on them and
scores its validation and test images through the head alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..data import PreparedData
from ..data.cache import resolve_cache_dir
from ..kinds import Strategy, TaskKind
from ..train import predict
from ..train.features import FEATURES_DIR, FeatureTable, cached_features, head_scores
from .folder_protocol import Log


def uses_cached_features(cfg: RunConfig) -> bool:
    """A probe, or a frozen run without augmentation."""
    return cfg.train.strategy == Strategy.PROBE or (cfg.train.strategy == Strategy.FROZEN and not cfg.train.augment)


def feature_cache_dir(cfg: RunConfig, data_root: Path) -> Path:
    """``features/`` in the image cache folder (``data.cache_dir``, else ``$MEDTRANSFER_CACHE``, else the user's
    cache folder): the features are of the images cached there."""
    return resolve_cache_dir(cfg.data.cache_dir, data_root) / FEATURES_DIR


def run_features(cfg: RunConfig, data: PreparedData, idx: dict[str, np.ndarray] | None, model: torch.nn.Module,
                 device: torch.device, data_root: Path, log: Log) -> FeatureTable | None:
    """The features of every image the run touches (``idx``'s training subset, validation and test splits; None:
    every labelled image, as an outer cross-validation's folds reach them all), or None when it trains on images."""
    if not uses_cached_features(cfg):
        return None
    rows = np.arange(len(data.labels)) if idx is None else np.concatenate([idx["train"], idx["val"], idx["test"]])
    return cached_features(model, data.images, rows, device, feature_cache_dir(cfg, data_root), log)


def split_scores(model: torch.nn.Module, data: PreparedData, rows: np.ndarray, features: FeatureTable | None,
                 kind: TaskKind, batch: int, device: torch.device) -> np.ndarray:
    """The model's scores of ``rows``: through the head from cached features when the run has them, else
    ``predict`` on the images (the same numbers up to rounding: the backbone is frozen)."""
    if features is None:
        return predict(model, data.images[rows], kind, batch, device)
    return head_scores(model, features.take(rows), kind, device)
