"""Registry of data sources: ``data.source`` name -> loader ``(DataConfig, TaskConfig, data_root) -> LabelledImages``.

A new source is one file here exporting a loader, one line in ``SOURCES``, and its name in
``config.DataConfig.source`` (which validates ``data.source`` before any data is read).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ...config import DataConfig, TaskConfig
from ...errors import ConfigError
from ..records import LabelledImages
from .csv import load_csv
from .medmnist import load_medmnist
from .nih14 import NIH14_FINDINGS, load_nih14

Loader = Callable[[DataConfig, TaskConfig, Path], LabelledImages]

SOURCES: dict[str, Loader] = {
    "nih14": load_nih14,
    "medmnist": load_medmnist,
    "csv": load_csv,
}


def get_source(name: str) -> Loader:
    try:
        return SOURCES[name]
    except KeyError:
        raise ConfigError(f"data.source: unknown source {name!r}; valid: {', '.join(SOURCES)}") from None


__all__ = ["SOURCES", "Loader", "get_source", "NIH14_FINDINGS", "load_csv", "load_medmnist", "load_nih14"]
