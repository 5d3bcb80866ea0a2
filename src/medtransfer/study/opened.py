"""The datasets a study reads, each opened once per call.

Before the first run, ``study run`` opens every dataset for three reasons: to name every
missing file at once, to check sources are disjoint from their targets, and to price the
runs for the ETA. Opening reads labels and file lists (a csv source checks that every file
exists), so each (data, task) is opened once and shared.
"""
from __future__ import annotations

from pathlib import Path

from ..config import RunConfig, canonical_json


class OpenedSources:
    """``get(cfg)``: the LabelledImages of a run config's data and task, loaded on first use."""

    def __init__(self, data_root: Path):
        self.data_root = Path(data_root)
        self._loaded: dict = {}

    @staticmethod
    def key(cfg: RunConfig) -> str:
        """What makes two configs read the same labelled images: their data and task sections."""
        return canonical_json([cfg.data.model_dump(mode="json"), cfg.task.model_dump(mode="json")])

    def get(self, cfg: RunConfig):
        # imported here: medtransfer.data adds about 0.25 s to `medtransfer --help` (0.35 s in all, measured),
        # which imports the study package; only a run or a dry run opens datasets
        from ..data import load_source

        key = self.key(cfg)
        if key not in self._loaded:
            self._loaded[key] = load_source(cfg.data, cfg.task, self.data_root)
        return self._loaded[key]

    def clear(self) -> None:
        """Let the loaded labels (and MedMNIST pixels) go once the checks are done: runs load their own."""
        self._loaded.clear()
