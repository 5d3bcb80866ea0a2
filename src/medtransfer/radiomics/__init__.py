"""Radiomics features (pyradiomics, 2-D) per image, the yardstick the CNN recipes are compared with, and the
pixel-intensity logistic regression (``pixels``) every run is compared with.

``radiomics_run`` (a whole baseline run, which uses ``medtransfer.runs``) is imported on first use: every run
imports ``radiomics.pixels`` through ``runs.baselines``, and an eager import here would make that a cycle.
"""
from .extract import FeatureTable, extract_features, extract_to_parquet, write_feature_table
from .features import extract_one, extractor_settings, settings_hash
from .baseline import RadiomicsBaseline, fit_radiomics_baseline

__all__ = [
    "FeatureTable", "extract_features", "extract_to_parquet", "write_feature_table",
    "extract_one", "extractor_settings", "settings_hash",
    "RadiomicsBaseline", "fit_radiomics_baseline", "radiomics_run",
]


def __getattr__(name: str):
    if name == "radiomics_run":
        from .baseline_run import radiomics_run

        return radiomics_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
