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

from ..config import DataConfig, RunConfig, canonical_json
from ..errors import ConfigError
from .grid import Plan


def dataset_identity(data: DataConfig, data_root: Path) -> tuple:
    """The files a config reads, whatever its pool, split or task."""
    where = None
    if data.path:
        where = str((Path(data_root) / Path(data.path).expanduser()).resolve())
    return data.source, data.name, data.size, where, data.csv_file


def _load(cfg: RunConfig, data_root: Path, cache: dict):
    from ..data import load_source

    key = canonical_json([cfg.data.model_dump(mode="json"), cfg.task.model_dump(mode="json")])
    if key not in cache:
        cache[key] = load_source(cfg.data, cfg.task, data_root)
    return cache[key]


def overlap(source_cfg: RunConfig, target_cfg: RunConfig, data_root: Path, cache: dict | None = None) -> tuple[list, list]:
    """(shared image ids, shared patient ids) of two configs of the same dataset; two empty lists otherwise."""
    if dataset_identity(source_cfg.data, data_root) != dataset_identity(target_cfg.data, data_root):
        return [], []
    cache = {} if cache is None else cache
    src, tgt = _load(source_cfg, data_root, cache), _load(target_cfg, data_root, cache)
    images = sorted(set(src.image_ids) & set(tgt.image_ids))
    patients = []
    if src.has_patient_ids and tgt.has_patient_ids:
        patients = sorted(set(np.asarray(src.patient_ids).astype(str)) & set(np.asarray(tgt.patient_ids).astype(str)))
    return images, patients


def check_sources_disjoint(plan: Plan, data_root: Path) -> None:
    """ConfigError naming the first source that shares images or patients with a target it initialises,
    unless that source says ``allow_overlap: true``."""
    cache: dict = {}
    sources = plan.source_by_id()
    checked = set()
    for run in plan.runs:
        if run.is_baseline or run.source not in sources:
            continue
        source = sources[run.source]
        name = source.source
        pair = (source.run_id, canonical_json([run.config.data.model_dump(mode="json"),
                                               run.config.task.model_dump(mode="json")]))
        if pair in checked or plan.spec.sources.get(name, {}).get("allow_overlap"):
            continue
        checked.add(pair)
        images, patients = overlap(source.config, run.config, data_root, cache)
        if images or patients:
            example = ", ".join(patients[:3]) if patients else ", ".join(images[:3])
            raise ConfigError(
                f"sources.{name} shares {len(patients)} patient(s) and {len(images)} image(s) with the target "
                f"pool of {run.task} (e.g. {'patients' if patients else 'images'} {example}): a source that has "
                f"seen the target's patients measures memory, not transfer. Give both the same data.partition "
                f"(e.g. {{source: 0.5, target: 0.5}}) with data.pool: source / target, or set "
                f"sources.{name}.allow_overlap: true (the report marks it)")
