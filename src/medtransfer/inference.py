"""Score new images with a finished run folder (config.yaml + metrics.json + weights)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import config_from_dict, load_yaml
from .errors import MedtransferError
from .kinds import SCRATCH
from .run_folder import RunFolder


def load_run(run_dir: Path, device: str = "auto"):
    """Rebuild a run's model from its folder: (config, model, label names, torch device)."""
    from .models import create_model, load_weights
    from .train import resolve_device

    folder = RunFolder(run_dir)
    for needed in (folder.config_path, folder.metrics_path, folder.weights_path):
        if not needed.is_file():
            raise MedtransferError(f"{needed} not found: --run must be a finished medtransfer run folder")
    cfg = config_from_dict(load_yaml(folder.config_path), origin=str(folder.config_path))
    label_names = folder.read_metrics().label_names
    model = create_model(cfg.model.arch, len(label_names), init=SCRATCH, dropout=cfg.model.dropout,
                         log=lambda _line: None)
    load_weights(model, folder.weights_path)   # strict: a run's own weights must fit exactly
    return cfg, model, label_names, resolve_device(device)


def predict_files(run_dir: Path, paths: list[Path], device: str = "auto"):
    """One row per image: its path and a score per label (probabilities)."""
    import pandas as pd

    from .data import decode_image
    from .train import predict

    cfg, model, label_names, dev = load_run(run_dir, device)
    images = np.stack([decode_image(Path(p), cfg.image_size) for p in paths])
    scores = predict(model, images, cfg.task.kind, cfg.train.batch_size, dev)
    frame = pd.DataFrame({"image": [str(p) for p in paths]})
    frame[[f"score_{n}" for n in label_names]] = scores
    return frame
