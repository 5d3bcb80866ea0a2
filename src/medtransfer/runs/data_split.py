"""The split and N-subset of a run: one call for every method, so CNN and radiomics runs are paired."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..data import PreparedData, prepare_data
from ..errors import MedtransferError
from .folder_protocol import Log


def prepare_run_data(cfg: RunConfig, data_root: Path, log: Log, progress: bool
                     ) -> tuple[PreparedData, dict[str, np.ndarray]]:
    """The split and N-subset every method of a run uses (so methods are paired): (data, indices)."""
    log(f"data root: {data_root}")
    data = prepare_data(cfg.data, cfg.task, cfg.image_size, data_root, cfg.train.n_train, cfg.train.seed,
                        progress=progress)
    for note in data.notes:
        log(note)
    idx = {"train": data.train_subset, "val": data.splits["val"], "test": data.splits["test"]}
    if len(idx["val"]) == 0 or len(idx["test"]) == 0:
        raise MedtransferError(f"the split has {len(idx['val'])} validation and {len(idx['test'])} test images: "
                               "both must be non-empty (check data.split_fractions / the split column)")
    return data, idx
