"""Patient-disjoint, label-stratified splits and nested small-N training subsets.

Two rules drive everything here:

* A patient's images never straddle splits. Follow-up images of one patient are nearly
  duplicates; letting them leak from train into test inflates AUROC.
* Small-N results must be comparable across N. The N=50 subset is contained in the N=100
  subset of the same seed, and every label present in the pool has a positive in every
  subset (once N reaches the number of labels), so "more data" is the only difference.
* N images should be N patients where the data allows it. A patient's follow-up images add
  little; drawing whole patients gave N = 50 subsets of the real NIH rows with 3 to 16
  patients. By default a subset takes one image per patient while unused patients remain.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError
from ..kinds import TaskKind
from .records import SPLIT_NAMES


def strata_matrix(labels: np.ndarray, kind: TaskKind) -> np.ndarray:
    """``(N, C)`` bool indicator columns to stratify on.

    multilabel: one column per label; binary: [negative, positive] (so negatives are
    stratified too); multiclass: one-hot of the class index.
    """
    labels = np.asarray(labels)
    if kind == TaskKind.MULTILABEL:
        return labels.reshape(len(labels), -1) > 0.5
    if kind == TaskKind.BINARY:
        pos = labels.reshape(len(labels), -1)[:, 0] > 0.5
        return np.stack([~pos, pos], axis=1)
    if kind == TaskKind.MULTICLASS:
        cls = labels.astype(np.int64).ravel()
        n_classes = int(cls.max()) + 1 if len(cls) else 0
        return np.eye(n_classes, dtype=bool)[cls]
    raise DataError(f"unknown task kind {kind!r}: expected multilabel, binary or multiclass")


def _group_by_patient(patient_ids) -> tuple[np.ndarray, np.ndarray]:
    """(unique patient ids sorted, per-image patient index)."""
    return np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)


def patient_split(patient_ids, strata: np.ndarray, fractions: Sequence[float], seed: int) -> dict[str, np.ndarray]:
    """Split images into train/val/test by patient, stratified on ``strata``.

    Iterative stratification (Sechidis et al., 2011) at the patient level: the label with
    the fewest still-unassigned positive images is handled first; each of its patients (in
    a seeded random order) goes to the split that most wants that label, ties broken by the
    split that most wants images overall, then by the seeded generator. Patients with no
    positive in any column follow by overall demand. Deterministic for a given seed.
    """
    strata = np.asarray(strata, dtype=bool).reshape(len(strata), -1)
    patients, pat_of = _group_by_patient(patient_ids)
    if len(pat_of) != len(strata):
        raise DataError(f"patient_split: {len(pat_of)} patient ids but {len(strata)} label rows")
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or fractions.min() < 0 or fractions.sum() <= 0:
        raise DataError(f"split fractions must be three non-negative numbers, got {list(fractions)}")
    fractions = fractions / fractions.sum()
    rng = np.random.default_rng(seed)

    n_pat = len(patients)
    counts = np.zeros((n_pat, strata.shape[1]), dtype=np.int64)  # positive images per patient and column
    np.add.at(counts, pat_of, strata.astype(np.int64))
    sizes = np.bincount(pat_of, minlength=n_pat)

    active = np.flatnonzero(fractions > 0)
    want_label = np.outer(fractions, counts.sum(axis=0)).astype(float)  # (3, C)
    want_size = fractions * len(pat_of)
    assigned = np.full(n_pat, -1, dtype=np.int64)
    order = rng.permutation(n_pat)
    remaining = counts.copy()

    def place(p: int, label: int | None) -> None:
        cand = active
        if label is not None:
            cand = cand[want_label[cand, label] == want_label[cand, label].max()]
        cand = cand[want_size[cand] == want_size[cand].max()]
        s = int(cand[0] if len(cand) == 1 else rng.choice(cand))
        assigned[p] = s
        want_label[s] -= counts[p]
        want_size[s] -= sizes[p]
        remaining[p] = 0

    while True:
        left = remaining.sum(axis=0)
        if not left.any():
            break
        label = int(np.argmin(np.where(left > 0, left, np.iinfo(np.int64).max)))
        for p in order[remaining[order, label] > 0]:
            place(int(p), label)
    for p in order[assigned[order] < 0]:
        place(int(p), None)

    img_split = assigned[pat_of]
    splits = {name: np.flatnonzero(img_split == k).astype(np.int64) for k, name in enumerate(SPLIT_NAMES)}
    check_patient_disjoint(splits, patient_ids)
    return splits


def check_patient_disjoint(splits: dict[str, np.ndarray], patient_ids, where: str = "split") -> None:
    """Raise if any patient has images in two splits (a leak that inflates test metrics)."""
    patient_ids = np.asarray(patient_ids).astype(str)
    seen: dict[str, set] = {name: set(patient_ids[idx].tolist()) for name, idx in splits.items()}
    names = list(seen)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = seen[a] & seen[b]
            if shared:
                example = sorted(shared)[0]
                raise DataError(f"{where}: {len(shared)} patient(s) have images in both {a} and {b}, e.g. patient {example}")


def given_split_indices(given_split) -> dict[str, np.ndarray]:
    """A source's per-image ``train/val/test`` strings -> index arrays (train must be non-empty)."""
    given = np.asarray(given_split).astype(str)
    bad = sorted(set(np.unique(given).tolist()) - set(SPLIT_NAMES))
    if bad:
        raise DataError(f"given split has values {bad}; expected only {list(SPLIT_NAMES)}")
    splits = {name: np.flatnonzero(given == name).astype(np.int64) for name in SPLIT_NAMES}
    if not len(splits["train"]):
        raise DataError("given split has no 'train' images")
    return splits


def carve_val(train: np.ndarray, patient_ids, strata: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a train index set into (train, val) by patient, stratified; for sources without a val split."""
    train = np.asarray(train, dtype=np.int64)
    parts = patient_split(np.asarray(patient_ids)[train], np.asarray(strata)[train], (1 - val_fraction, val_fraction, 0.0), seed)
    return train[parts["train"]], train[parts["val"]]


SUBSET_BY = ("patients", "images")   # data.subset_by: how the nested N-subsets are drawn (see subset_order)


def _patient_ranks(pool: np.ndarray, patient_ids, seed: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """(per-image patient index, each patient's rank in a seeded permutation, the generator after it).

    The permutation is the generator's first draw in both subset orders, so on data without patient ids (one
    image per patient) both orders are the same and a MedMNIST subset does not depend on ``data.subset_by``.
    """
    patients, pat_of = _group_by_patient(np.asarray(patient_ids)[pool])
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(patients))
    rank = np.empty_like(perm)
    rank[perm] = np.arange(len(perm))
    return pat_of, rank, rng


def _class_seeds(strata: np.ndarray, pat_of: np.ndarray, by_patient: np.ndarray, fresh: bool) -> list[int]:
    """Pool positions of one positive image per stratum column, rarest column first, skipping columns an earlier
    seed image covers: the first positive in ``by_patient`` order, from a patient not yet seeded when ``fresh``
    and another patient has one (so every class is present in the smallest subsets)."""
    seeds: list[int] = []
    covered = np.zeros(strata.shape[1], dtype=bool)
    seeded = np.zeros(int(pat_of.max()) + 1 if len(pat_of) else 0, dtype=bool)
    positives = strata.sum(axis=0)
    for col in np.argsort(positives, kind="stable"):
        if positives[col] == 0 or covered[col]:
            continue
        candidates = by_patient[strata[by_patient, col]]
        if fresh and (~seeded[pat_of[candidates]]).any():
            candidates = candidates[~seeded[pat_of[candidates]]]
        first = int(candidates[0])
        seeds.append(first)
        covered |= strata[first]
        seeded[pat_of[first]] = True
    return seeds


def _whole_patient_order(strata: np.ndarray, pat_of: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """``data.subset_by: images`` (the order before issue 23): the seed images, the seed patients' other images,
    then every other patient's images, patient by patient in the permuted order."""
    by_patient = np.lexsort((np.arange(len(pat_of)), rank[pat_of]))   # each patient's images contiguous
    seeds = _class_seeds(strata, pat_of, by_patient, fresh=False)
    seed_pats = list(dict.fromkeys(int(pat_of[s]) for s in seeds))
    is_seed_pat = np.zeros(len(rank), dtype=bool)
    is_seed_pat[seed_pats] = True
    taken = np.zeros(len(pat_of), dtype=bool)
    taken[seeds] = True
    seed_pat_rank = {p: i for i, p in enumerate(seed_pats)}
    seed_rest = [i for i in by_patient if is_seed_pat[pat_of[i]] and not taken[i]]
    seed_rest.sort(key=lambda i: seed_pat_rank[int(pat_of[i])])  # stable: keeps in-patient order
    others = by_patient[~is_seed_pat[pat_of[by_patient]]]
    return np.concatenate([np.asarray(seeds, dtype=np.int64), np.asarray(seed_rest, dtype=np.int64), others])


def _patient_first_order(strata: np.ndarray, pat_of: np.ndarray, rank: np.ndarray,
                         rng: np.random.Generator) -> np.ndarray:
    """``data.subset_by: patients``: the seed images (from distinct patients where possible), then round robin:
    round j holds the j-th image of every patient that has one (seed images count first), patients in the
    permuted order, each patient's images in a seeded order. So no patient gives a second image while one
    gives none."""
    within = rng.random(len(pat_of))                            # a seeded order of each patient's images
    by_patient = np.lexsort((within, rank[pat_of]))
    seeds = np.asarray(_class_seeds(strata, pat_of, by_patient, fresh=True), dtype=np.int64)
    taken = np.zeros(len(pat_of), dtype=bool)
    taken[seeds] = True
    sequence = np.concatenate([seeds, by_patient[~taken[by_patient]]])   # per patient: seed images first
    grouped = np.argsort(pat_of[sequence], kind="stable")
    starts = np.searchsorted(pat_of[sequence][grouped], pat_of[sequence][grouped])
    image_round = np.empty(len(sequence), dtype=np.int64)
    image_round[sequence[grouped]] = np.arange(len(sequence)) - starts   # j: the image's place in its patient
    rest = sequence[len(seeds):]
    return np.concatenate([seeds, rest[np.lexsort((rank[pat_of[rest]], image_round[rest]))]])


def subset_order(pool: np.ndarray, patient_ids, strata: np.ndarray, seed: int, by: str = "patients") -> np.ndarray:
    """The one deterministic ordering of ``pool`` whose prefixes are the nested N-subsets.

    First, for each stratum column with a positive in the pool (rarest first) that no earlier seed image covers,
    one positive image of the first patient in a seeded patient permutation that has one: every class is in
    the subset once N reaches the number of columns. Then ``by="patients"`` (the default) spreads N over as
    many patients as it can, one image per patient per round, because follow-up images of one patient add
    little; ``by="images"`` draws whole patients one after another (the order before issue 23, kept so
    runs recorded with it keep their subsets). Without patient ids (one image per patient) both are the same.
    """
    if by not in SUBSET_BY:
        raise DataError(f"data.subset_by must be one of {list(SUBSET_BY)}, got {by!r}")
    pool = np.asarray(pool, dtype=np.int64)
    strata = np.asarray(strata, dtype=bool).reshape(len(strata), -1)[pool]
    pat_of, rank, rng = _patient_ranks(pool, patient_ids, seed)
    if by == "images":
        return pool[_whole_patient_order(strata, pat_of, rank)]
    return pool[_patient_first_order(strata, pat_of, rank, rng)]


def nested_subset(pool: np.ndarray, patient_ids, strata: np.ndarray, n: int | str, seed: int,
                  by: str = "patients") -> np.ndarray:
    """The first ``n`` images of ``subset_order`` (sorted indices): nested in n for a fixed seed and ``by``.

    ``n='all'`` returns the whole pool. ``n`` larger than the pool is an error rather than a
    silent cap, so a learning curve never reports two points that trained on the same data.
    """
    pool = np.asarray(pool, dtype=np.int64)
    if isinstance(n, str):
        if n != "all":
            raise DataError(f"train.n_train must be a positive integer or 'all', got {n!r}")
        return np.sort(pool)
    n = int(n)
    if n < 1:
        raise DataError(f"train.n_train must be a positive integer or 'all', got {n}")
    if n > len(pool):
        raise DataError(f"train.n_train={n} is larger than the training pool ({len(pool)} images)")
    return np.sort(subset_order(pool, patient_ids, strata, seed, by)[:n])


def fold_strata(targets: np.ndarray) -> np.ndarray:
    """One stratum per row of one-vs-rest 0/1 ``targets`` (N, K), for stratified folds: the class (one
    column: 0/1) or the row's rarest positive label (several columns; K for a row with none).

    Stratifying a multi-label pool on its rarest label keeps every fold holding some of the rare findings,
    which a fold's macro AUROC needs."""
    targets = np.asarray(targets).reshape(len(targets), -1)
    if targets.shape[1] == 1:
        return targets[:, 0].astype(int)
    order = np.argsort(targets.sum(0), kind="stable")   # rarest label first
    out = np.full(len(targets), targets.shape[1], dtype=int)
    for k in order[::-1]:                                # rarer labels overwrite commoner ones
        out[targets[:, k] > 0] = k
    return out


def pool_folds(groups: np.ndarray, strata: np.ndarray, seed: int, k: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patient-grouped, stratified folds over an N-pool, as (train positions, held-out positions) pairs.

    ``k`` is capped by the patients of the rarest stratum, so each fold can hold a patient of every class;
    [] when that leaves fewer than 2 (nothing to cross-validate). The CNN runs' cross-validated selection
    and the radiomics baseline's C call this with the same pool, seed and k, so their folds are the same.
    """
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    groups, strata = np.asarray(groups), np.asarray(strata)
    patients = [len(np.unique(groups[strata == s])) for s in np.unique(strata)]
    k = min(k, min(patients)) if len(patients) > 1 else 0
    if k < 2:
        return []
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "the least populated class has only N members": expected at small N
        warnings.simplefilter("ignore", UserWarning)
        return [(tr, te) for tr, te in cv.split(np.zeros(len(groups)), strata, groups)]
