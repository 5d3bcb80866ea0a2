"""``train`` from a ``checkpoint:`` init: was the checkpoint trained on this run's patients or images?

A study checks its sources before any run (``study.disjoint``); a checkpoint handed to ``train``
by hand needs the same check, or fine-tuning on NIH from a model pretrained on the same NIH
images scores memory. A run folder's ``config.yaml`` says what its weights were trained on, so
that data is compared with this run's (``data.leaks``: patient ids where comparable, pixels
always) before the run folder is even created. A bare weights file says nothing about its data:
then train.log says no check was possible. The checkpoint's own init is not followed further.
"""
from __future__ import annotations

from pathlib import Path

from ..config import RunConfig, load_config
from ..data import load_source
from ..data.leaks import dataset_label, find_overlap
from ..errors import MedtransferError, SharedDataError
from ..kinds import InitKind
from ..run_folder import RunFolder


def checkpoint_run_folder(cfg: RunConfig) -> RunFolder | None:
    """The run folder a ``checkpoint:`` init points at (the folder itself, or the folder holding the weights
    file), when it has a config.yaml; None otherwise."""
    path = cfg.model.init.path
    path = path if path.is_absolute() else Path.cwd() / path
    folder = RunFolder(path if path.is_dir() else path.parent)
    return folder if folder.config_path.is_file() else None


def checkpoint_leak_notes(cfg: RunConfig, data_root: Path) -> list[str]:
    """train.log lines saying what was checked; SharedDataError when the checkpoint's training data shares
    patients or images with this run's data."""
    if cfg.model.init.kind is not InitKind.CHECKPOINT:
        return []
    folder = checkpoint_run_folder(cfg)
    if folder is None:
        return [f"leak check: not possible: checkpoint {cfg.model.init.path} has no config.yaml beside it, so "
                "nothing says what it was trained on (it may have seen this run's patients or images)"]
    try:
        trained = load_config(folder.config_path)
        source = load_source(trained.data, trained.task, data_root)
    except MedtransferError as err:
        return [f"leak check: not possible: the data checkpoint run {folder.path} was trained on cannot be read "
                f"here ({err})"]
    found = find_overlap(source, trained.data, load_source(cfg.data, cfg.task, data_root), cfg.data, data_root)
    if found:
        raise SharedDataError(
            f"model.init checkpoint: the run {folder.path} was trained on {dataset_label(trained.data)}, which "
            f"shares {found.counts()} with this run's data ({dataset_label(cfg.data)}): {found.examples()}; its "
            "test AUROC would measure memory, not transfer: pretrain on other patients (data.partition with "
            "data.pool) or start from another init")
    return [f"leak check: checkpoint run {folder.path} ({dataset_label(trained.data)}, {len(source)} images) shares "
            f"no patient and no image with this run's data (patients: {found.patient_space or 'not comparable'}; "
            "images: by pixels)"] + [f"leak check: {note}" for note in found.notes]
