"""A pretraining source must not hold the target's images or patients.

If the same-site source is trained on the target's own pool (the seed paper's design, read
naively: pretrain on NIH ChestX-ray14, then study N on NIH ChestX-ray14), every "N = 50"
run has already seen thousands of labelled target images, some of them test images, and the
measured transfer gain is there by construction. So before any run, each source is compared
with every target it initialises, by image id and (when both sides have them) patient id.
Ids are compared only between configs that read the same dataset (same source kind and
files): two different datasets' ids say nothing about each other (a knee CSV's patient "12"
is not NIH's patient "12"), and matching images across datasets would need their pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import DataConfig, RunConfig, resolve_path
from ..errors import ConfigError
from .grid import Plan
from .opened import OpenedSources


def dataset_identity(data: DataConfig, data_root: Path) -> tuple:
    """The files a config reads, whatever its pool, split or task (resolved as the loaders resolve them,
    demo-bundle fallback included, so a relative and an absolute path to the same files match)."""
    where = str(resolve_path(data.path, data_root).resolve()) if data.path else None
    return data.source, data.name, data.size, where, data.csv_file


def overlap(source_cfg: RunConfig, target_cfg: RunConfig, opened: OpenedSources) -> tuple[list, list]:
    """(shared image ids, shared patient ids) of two configs of the same dataset; two empty lists otherwise."""
    if dataset_identity(source_cfg.data, opened.data_root) != dataset_identity(target_cfg.data, opened.data_root):
        return [], []
    src, tgt = opened.get(source_cfg), opened.get(target_cfg)
    images = sorted(set(src.image_ids) & set(tgt.image_ids))
    patients = []
    if src.has_patient_ids and tgt.has_patient_ids:
        patients = sorted(set(np.asarray(src.patient_ids).astype(str)) & set(np.asarray(tgt.patient_ids).astype(str)))
    return images, patients


def check_sources_disjoint(plan: Plan, opened: OpenedSources) -> None:
    """ConfigError naming the first source that shares images or patients with a target it initialises,
    unless that source says ``allow_overlap: true``."""
    sources = plan.source_by_id()
    checked = set()
    for run in plan.runs:
        if run.is_baseline or run.source not in sources:
            continue
        source = sources[run.source]
        name = source.source
        pair = (source.run_id, OpenedSources.key(run.config))
        if pair in checked or plan.spec.sources.get(name, {}).get("allow_overlap"):
            continue
        checked.add(pair)
        images, patients = overlap(source.config, run.config, opened)
        if images or patients:
            example = ", ".join(patients[:3]) if patients else ", ".join(images[:3])
            raise ConfigError(
                f"sources.{name} shares {len(patients)} patient(s) and {len(images)} image(s) with the target "
                f"pool of {run.task} (e.g. {'patients' if patients else 'images'} {example}): a source that has "
                f"seen the target's patients measures memory, not transfer. Give both the same data.partition "
                f"(e.g. {{source: 0.5, target: 0.5}}) with data.pool: source / target, or set "
                f"sources.{name}.allow_overlap: true (the report marks it)")
