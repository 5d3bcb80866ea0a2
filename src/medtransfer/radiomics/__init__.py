"""Radiomics features (pyradiomics, 2-D) per image, the yardstick the CNN recipes are compared with."""
from .extract import FeatureTable, extract_features, extract_to_parquet, write_feature_table
from .features import extract_one, extractor_settings, settings_hash
from .baseline import RadiomicsBaseline, fit_radiomics_baseline
from .baseline_run import radiomics_run

__all__ = [
    "FeatureTable", "extract_features", "extract_to_parquet", "write_feature_table",
    "extract_one", "extractor_settings", "settings_hash",
    "RadiomicsBaseline", "fit_radiomics_baseline", "radiomics_run",
]
