"""One dataset, several pools of patients: pretrain on one, study N on another, never the same patient.

The seed paper's targeted transfer pretrains on chest X-rays and fine-tunes on chest X-rays.
Done with one dataset for both, the source must not hold the target's patients: a source
that has seen the target's test patients (or 75,000 of its labelled images) measures
memory, not transfer. ``data.partition`` splits the dataset's patients (not images) into
named pools by a seeded permutation of the sorted patient IDs, so the draw depends only on
the set of patients, the fractions and the seed: the source config and the target config
compute the same pools independently.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import DataError
from .records import LabelledImages


def partition_patients(patient_ids: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Pool name -> boolean mask over images; every patient in exactly one pool, pools in the given order."""
    patients, image_patient = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(patients))
    cuts = np.round(np.cumsum(list(fractions.values())) * len(patients)).astype(int)
    cuts[-1] = len(patients)
    pool_of = np.empty(len(patients), dtype=int)          # sorted patient -> pool number
    pool_of[order] = np.searchsorted(cuts, np.arange(len(patients)), side="right")
    return {name: pool_of[image_patient] == k for k, name in enumerate(fractions)}


def take_pool(src: LabelledImages, fractions: dict[str, float], pool: str, seed: int) -> LabelledImages:
    """The images of one pool's patients (every per-image field filtered alike)."""
    mask = partition_patients(src.patient_ids, fractions, seed)[pool]
    n_patients = len(np.unique(src.patient_ids))
    if not mask.any():
        raise DataError(f"data.partition: pool {pool!r} of {src.dataset_key} holds no patient "
                        f"({n_patients} patients, fractions {fractions})")
    idx = np.flatnonzero(mask)
    spec = ",".join(f"{k}={v:g}" for k, v in fractions.items())
    return replace(
        src,
        image_ids=[src.image_ids[i] for i in idx],
        paths=None if src.paths is None else [src.paths[i] for i in idx],
        pixels=None if src.pixels is None else src.pixels[idx],
        patient_ids=src.patient_ids[idx],
        labels=src.labels[idx],
        given_split=None if src.given_split is None else src.given_split[idx],
        columns={k: [v[i] for i in idx] for k, v in src.columns.items()},
        dataset_key=f"{src.dataset_key} pool={pool} of {spec} seed={seed}",   # its own image cache
        notes=list(src.notes) + [f"data.partition: pool {pool!r}, {len(idx)} of {len(src)} images, "
                                 f"{len(np.unique(src.patient_ids[idx]))} of {n_patients} "
                                 f"patients ({spec}, seed {seed})"],
    )
