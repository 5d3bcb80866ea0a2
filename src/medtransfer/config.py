"""The one validated run config: YAML file + dotted ``--set`` overrides -> RunConfig.

Every key has a default except ``data.source``; an unknown key anywhere is an
error that names its dotted path, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError,
                      field_validator, model_validator)

from .errors import ConfigError
from .kinds import IMAGENET, Init, InitKind, Strategy, TaskKind, published_init_problem
from .schedules import get_policy, policy_names
from .xrv_weights import arch_problem

DEFAULT_DATA_ROOT = "~/.cache/medtransfer/data"

# Keys added after run ids were first published carry this marker: while such a key is at its
# default it is left out of ``hashed_view``, so adding a key never changes an existing run id.
ADDED_LATER = {"added_later": True}

# data.patient_column's explicit opt-out: each image is its own patient (YAML null means "not given").
PER_IMAGE = "none"

# The value data.subset_by stood for before it existed: how every subset was drawn then (see
# RunConfig.unhashed_keys), and what a run folder's config.yaml without the key means.
SUBSET_BY_BEFORE = "images"
# The value train.selection stood for before it existed (every run selected on its validation images).
SELECTION_BEFORE = "holdout"

# train.min_steps default: about 3 passes at N = 800 and batch 32 (25 steps a pass), 50 passes at N = 50.
DEFAULT_MIN_STEPS = 100

# Upper bounds no real run reaches: a typo (an extra digit, 1e30) is a one-line error naming the key,
# not a run that never ends or a dry-run estimate of 1e21 hours. They change no dump, so no run id.
MAX_SEED = 2**32 - 1            # numpy's seed range
MAX_EPOCHS = 10_000             # train.epochs, patience, step_every, cycle_epochs, gradual_epochs
MAX_STEPS = 10_000_000          # train.steps, train.min_steps
MAX_N_TRAIN = 10_000_000        # train.n_train: more images than any public chest X-ray collection
MAX_IMAGE_SIZE = 4096           # image_size (pixels a side)
MAX_RADIOMICS_SIZE = 8192       # radiomics image_size / max_size (native mammograms exceed 4096)
MAX_PROCESSES = 1024            # threads and worker processes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    source: Literal["medmnist", "nih14", "csv"]
    name: str | None = Field(None, description="medmnist flag, e.g. pneumoniamnist")
    size: int | None = Field(None, description="medmnist image size (28, 64, 128, 224); None = 28")
    path: str | None = Field(None, description="folder (nih14) or CSV file / folder holding it (csv), relative to the data root or absolute")
    csv_file: str | None = Field(None, description="csv source: file name inside data.path when data.path is a folder")
    image_column: str = "image"
    patient_column: str | None = Field(
        None, description="csv source: patient-ID column; 'none' = each image is its own patient (the explicit opt-out); "
                          "None (not given) = the same, but a column that looks like a patient id is then refused")
    split_column: str | None = Field(None, description="csv source: column with train/val/test, used when data.split='given'")
    split: Literal["random", "given", "official"] = "random"
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    split_seed: int = Field(0, ge=0, le=MAX_SEED)
    cache_dir: str | None = Field(None, description="image cache folder (absolute, or relative to the data root); None = "
                                                   "$MEDTRANSFER_CACHE, else $XDG_CACHE_HOME/medtransfer/images, else "
                                                   "~/.cache/medtransfer/images")
    workers: int = Field(0, ge=0, le=MAX_PROCESSES, description="decode processes for the cache; 0 = all cores")
    drop_missing_labels: bool = Field(False, json_schema_extra=ADDED_LATER,
                                      description="csv source: drop rows whose label is empty/nan/NA/None (counted in the "
                                                  "log) instead of stopping with an error naming them")
    allow_outside_root: bool = Field(False, json_schema_extra=ADDED_LATER,
                                     description="csv source: allow image paths, relative or absolute, that resolve "
                                                 "outside the data root (the dataset's own folder when the CSV is "
                                                 "not under the data root); train.log and the report say so")
    image_root: str | None = Field(None, json_schema_extra=ADDED_LATER,
                                   description="csv source: the folder relative image paths start from, relative to "
                                               "the CSV's folder or absolute (e.g. images); None = the CSV's folder")
    partition: dict[str, float] | None = Field(
        None, json_schema_extra=ADDED_LATER,
        description="split the dataset's PATIENTS into named pools first, e.g. {source: 0.5, target: 0.5}: a "
                    "study can then pretrain on one pool and study N on another of the same dataset without sharing "
                    "a patient (data.pool picks this config's pool; source and target must give the same partition)")
    pool: str | None = Field(None, json_schema_extra=ADDED_LATER, description="the data.partition pool this config uses")
    partition_seed: int = Field(0, ge=0, le=MAX_SEED, json_schema_extra=ADDED_LATER, description="seed of the data.partition draw")
    val_size: Literal["fixed", "proportional"] = Field(
        "fixed", json_schema_extra=ADDED_LATER,
        description="fixed: validate on the whole validation split; proportional: on a patient-grouped, stratified "
                    "subset of it sized like the training subset (N x val/train of data.split_fractions, N/7 for "
                    "70/10/20), as a user with N labelled images would have. Early stopping, the best epoch, the "
                    "threshold and the radiomics C all use these labels")
    # Hashed (not ADDED_LATER) where it changes what a run trains: see ``RunConfig.unhashed_keys``.
    subset_by: Literal["patients", "images"] = Field(
        "patients",
        description="how the nested N-subsets (training, and a proportional validation set) are drawn where the "
                    "data has patient ids: patients = from as many distinct patients as possible (one image per "
                    "patient while unused patients remain); images = whole patients one after another (the draw "
                    "before this key existed). Without patient ids (medmnist, csv without data.patient_column) each "
                    "image is its own patient and both are the same")

    @field_validator("patient_column")
    @classmethod
    def _none_is_the_opt_out(cls, v):
        """YAML reads ``none`` / ``None`` as text (only ``null`` and ``~`` are null): any case means the opt-out."""
        return PER_IMAGE if isinstance(v, str) and v.strip().lower() == PER_IMAGE else v

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, v):
        if any(f < 0 for f in v) or abs(sum(v) - 1.0) > 1e-6 or v[0] == 0:
            raise ValueError(f"data.split_fractions must be three non-negative fractions summing to 1 with train > 0, got {v}")
        return v

    @field_validator("partition")
    @classmethod
    def _pools_are_fractions(cls, v):
        if v is None:
            return v
        if len(v) < 2 or any(not (0 < f < 1) for f in v.values()) or abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError(f"data.partition must name two or more pools with fractions in (0, 1) summing to 1, got {v}")
        return v

    @model_validator(mode="after")
    def _pool_names_a_partition(self):
        if (self.partition is None) != (self.pool is None):
            raise ValueError("data.partition and data.pool go together: the partition, and which of its pools to use")
        if self.partition is not None and self.pool not in self.partition:
            raise ValueError(f"data.pool={self.pool!r} is not a pool of data.partition ({', '.join(self.partition)})")
        return self

    @property
    def patient_id_column(self) -> str | None:
        """The csv source's patient-ID column, or None: not given, or ``none`` (each image its own patient)."""
        return None if self.patient_column in (None, PER_IMAGE) else self.patient_column

    @property
    def gives_patient_ids(self) -> bool:
        """Whether the source gives patient ids: nih14 always, csv with data.patient_column, medmnist never."""
        return self.source == "nih14" or (self.source == "csv" and bool(self.patient_id_column))

    def hashed_overrides(self) -> dict:
        """Values ``hashed_view`` hashes in place of the real ones: ``patient_column: none`` trains exactly what
        an unset one trained before the opt-out existed (each image its own patient), so it keeps that run id
        and a user who adds it to a finished study does not orphan its runs."""
        return {"patient_column": None} if self.patient_column == PER_IMAGE else {}

    @model_validator(mode="after")
    def _source_needs(self):
        if self.source == "medmnist" and not self.name:
            raise ValueError("data.name is required for data.source=medmnist (e.g. pneumoniamnist)")
        if self.source in ("nih14", "csv") and not self.path:
            raise ValueError(f"data.path is required for data.source={self.source}")
        return self


class TaskConfig(_Strict):
    kind: TaskKind
    labels: list[str] | None = Field(None, description="multilabel: which findings; None = all (nih14: the 14 findings)")
    positive: str | None = Field(None, description="binary from a multi-label source: the positive finding, e.g. Pneumonia")
    label_column: Union[str, list[str], None] = Field(None, description="csv source: label column (binary/multiclass) or columns (multilabel)")


# model.init is parsed here, once, into an Init; it is dumped (YAML, JSON, run-id hashes) as its string form.
InitField = Annotated[Init, PlainValidator(Init.parse), PlainSerializer(str, return_type=str)]


class ModelConfig(_Strict):
    arch: str = "resnet18"
    init: InitField = IMAGENET
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _xrv_fits_arch(self):
        """torchxrayvision weights exist for one architecture: say so before any data is read."""
        if self.init.kind is InitKind.XRV:
            problem = arch_problem(self.init.xrv_name, self.arch)
            if problem:
                raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _published_weights_fit_arch(self):
        """``pretrained`` is a published backbone's own weights, and such a backbone has no ImageNet weights."""
        problem = published_init_problem(self.arch, self.init)
        if problem:
            raise ValueError(problem)
        return self


# train keys a probe (train.strategy=probe) does not read: it takes no optimiser step and sees no augmented image
PROBE_UNUSED = ("lr_policy", "lr", "discriminative", "epochs", "min_steps", "steps", "gradual_epochs", "batch_size",
                "patience", "optimizer", "weight_decay", "momentum", "step_gamma", "step_every", "cycle_epochs",
                "augment", "pack")


class TrainConfig(_Strict):
    n_train: Union[int, Literal["all"]] = "all"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    strategy: Strategy = Field(
        Strategy.FULL,
        description="frozen = train the head on the frozen backbone (its features are read from the feature cache "
                    "when train.augment is false); full = train every layer; gradual = thaw the layer groups in "
                    "stages; probe = no optimiser: a logistic regression on the frozen backbone's features (read "
                    "from or written to the feature cache), its C chosen by patient-grouped CV inside the N-pool, "
                    "one-vs-rest per label, written into the head. For probe the keys of the optimiser and the "
                    "schedule (lr, lr_policy, epochs, min_steps, steps, gradual_epochs, batch_size, patience, "
                    "optimizer, weight_decay, momentum, step_*, cycle_epochs, discriminative, augment) and "
                    "model.dropout mean nothing and are left out of its run id")
    lr_policy: str = Field("one_cycle", description="a registered LR policy (medtransfer.schedules): "
                                                    + ", ".join(policy_names()))
    # lr and weight_decay: finite, but no upper bound. Their size costs no time, and a huge lr is how a
    # divergence is provoked on purpose (it stops at the first NaN loss, recorded as diverged).
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    discriminative: float = Field(1.0, gt=0.0, le=1.0, description="LR ratio first group : head, spread geometrically over the groups (1 = one LR; 0.01 = fastai's slice(lr/100, lr))")
    epochs: int = Field(10, ge=1, le=MAX_EPOCHS, description="passes over the training images, and the number of validation rounds "
                                                "(with min_steps / steps each round may hold more or fewer than one pass)")
    # Not ADDED_LATER on purpose: a minimum changes what every small-N run trains, so it must change their ids.
    min_steps: int = Field(DEFAULT_MIN_STEPS, ge=0, le=MAX_STEPS, description="at least this many optimiser steps whatever N, so a "
                                                             "50-image run is trained, not stopped after 6 steps "
                                                             "(medtransfer.train.budget); 0 = epochs only")
    steps: int | None = Field(None, ge=1, le=MAX_STEPS, json_schema_extra=ADDED_LATER,
                              description="exact optimiser-step budget (instead of epochs / min_steps), cut into "
                                          "train.epochs validation rounds")
    gradual_epochs: list[int] | None = Field(None, description="epochs per gradual stage (head, +last group, all); None = split train.epochs")
    batch_size: int = Field(64, ge=1, le=65_536)
    patience: int | None = Field(None, ge=1, le=MAX_EPOCHS, description="early-stopping patience in validation rounds (epochs) on val macro AUROC; None = no early stop")
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = Field(1e-4, ge=0, allow_inf_nan=False)
    momentum: float = Field(0.9, ge=0, lt=1)
    step_gamma: float = Field(0.1, gt=0, le=1, description="step policy: LR factor at each step")
    step_every: int = Field(0, ge=0, le=MAX_EPOCHS, description="step policy: epochs between steps; 0 = one third of the epochs")
    cycle_epochs: int = Field(2, ge=1, le=MAX_EPOCHS, description="cyclic policy: epochs per triangular cycle")
    augment: bool = True
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    threads: int | None = Field(None, ge=1, le=MAX_PROCESSES, json_schema_extra=ADDED_LATER,
                                description="CPU threads of the run; None = torch's default (all cores). CPU results "
                                            "depend on it, so it is part of the run id when set; a study with "
                                            "--workers K or Ray sets it to the run's share of the cores")
    # Hashed unless ``holdout`` (the rule before the key existed, see ``unhashed_keys``): ``auto`` and ``cv``
    # change what a small-N run trains on (the whole N-pool) and how long, so they must change its id.
    selection: Literal["auto", "holdout", "cv"] = Field(
        "auto", description="how the run picks its training length and the study its recipe: holdout = on the "
                            "validation images; cv = train.cv_folds patient-grouped, stratified folds over the "
                            "N-pool (the training subset plus the validation images the run would hold out), the "
                            "length from the folds' mean validation curve, then one fit on the whole pool; auto = "
                            "cv when the validation split holds fewer than 50 images or fewer than 10 of a class")
    cv_folds: int = Field(5, ge=2, le=20, json_schema_extra=ADDED_LATER,
                          description="train.selection=cv: folds (fewer when a class has fewer patients)")
    # Never hashed (see ``unhashed_keys``): they add an estimate beside the split's, and change neither the kept
    # model, nor its split, nor its test metrics.
    test_estimate: Literal["auto", "split", "outer_cv"] = Field(
        "auto", description="how the run's test performance is estimated: split = on its held-out test split; "
                            "outer_cv = also by train.outer_folds patient-grouped, stratified outer folds over the "
                            "whole labelled set, each fold drawing the run's N-subset from its other folds and "
                            "selecting inside them (nested), its pooled out-of-fold AUROC recorded as "
                            "metrics.json's test_estimate (the kept model is still the one trained on the split); "
                            "auto = outer_cv when the test split holds fewer than 30 patients of a class. A study "
                            "keeps one shared test split (split)")
    outer_folds: int = Field(5, ge=2, le=20, description="train.test_estimate=outer_cv: outer folds (fewer when "
                                                         "a class has fewer patients)")
    pack: int = Field(1, ge=1, le=64, json_schema_extra=ADDED_LATER,
                      description="the fused-pack size a study trained this run in (study run --pack K, "
                                  "resources.pack); set by the study, not by hand. A packed result differs from an "
                                  "unpacked one by rounding, so it is part of the run id when above 1; a plain "
                                  "`train` always trains alone")

    def hashed_overrides(self) -> dict:
        """A probe hashes ``probe_c: training_subset``: since 2026-12-05 a probe that selects on a validation split
        chooses C on folds of its training subset alone (before, of the N-pool with the validation share), so a
        study resumed across that change trains its probes again rather than mixing the two."""
        return {"probe_c": "training_subset"} if self.strategy == Strategy.PROBE else {}

    def unhashed_keys(self) -> set[str]:
        """``selection`` is left out of the run id at ``holdout``: every run before the key existed selected
        on its validation images, so such a run keeps its id. A probe takes no optimiser step, so the keys
        of the optimiser and its schedule (``PROBE_UNUSED``) cannot change its result: they are left out, and
        a grid that crosses probe with LR policies runs one probe, not one per policy. ``test_estimate`` and
        ``outer_folds`` are always left out: they decide whether an outer cross-validation estimate is added to
        metrics.json, while the run's model, split, training and test metrics, which its id names, are the same
        whatever they say (a study sets ``split`` on its runs without changing an id)."""
        unused = set(PROBE_UNUSED) if self.strategy == Strategy.PROBE else set()
        return unused | {"test_estimate", "outer_folds"} | ({"selection"} if self.selection == SELECTION_BEFORE else set())

    @field_validator("lr_policy")
    @classmethod
    def _known_policy(cls, v):
        return get_policy(v).name   # ValueError lists the registered policies

    @field_validator("n_train")
    @classmethod
    def _positive_n(cls, v):
        if v != "all" and not 1 <= v <= MAX_N_TRAIN:
            raise ValueError(f"train.n_train must be a positive integer up to {MAX_N_TRAIN:,} or 'all', got {v}")
        return v

    @model_validator(mode="after")
    def _gradual_stages(self):
        if self.gradual_epochs is not None and (len(self.gradual_epochs) != 3 or min(self.gradual_epochs) < 0
                                                or max(self.gradual_epochs) > MAX_EPOCHS):
            raise ValueError(f"train.gradual_epochs must be three epoch counts from 0 to {MAX_EPOCHS:,} "
                             f"(head, +last group, all), got {self.gradual_epochs}")
        return self


RADIOMICS_CLASSES = ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm", "shape2D")


class RadiomicsConfig(_Strict):
    """Settings of the radiomics + logistic-regression baseline (recorded with the features)."""
    image_size: int | None = Field(None, ge=8, le=MAX_RADIOMICS_SIZE,
                                   description="None = the images' native size, capped at max_size")
    max_size: int = Field(512, ge=8, le=MAX_RADIOMICS_SIZE)
    bin_width: float | None = Field(25.0, gt=0, allow_inf_nan=False, description="pyradiomics binWidth (set null to use bin_count)")
    bin_count: int | None = Field(None, ge=2, le=65_536, description="pyradiomics binCount (instead of bin_width)")
    feature_classes: list[str] = Field(default_factory=lambda: list(RADIOMICS_CLASSES))
    image_types: dict[str, dict] = Field(default_factory=lambda: {"Original": {}},
                                         description="pyradiomics image types, e.g. {Original: {}, LoG: {sigma: [1.0, 3.0]}, Wavelet: {}}")
    resampled_pixel_spacing: list[float] | None = None
    mask_column: str | None = Field(None, description="csv source: column with a mask file per image; None = whole image")
    # Not ADDED_LATER on purpose: normalising changes every feature, so it must change the baseline's run ids.
    normalize: bool = Field(True, description="pyradiomics normalize: z-score each image's intensities before "
                                              "binning, so exposure / window differences between images do not "
                                              "become features")
    normalize_scale: float = Field(100.0, gt=0, allow_inf_nan=False, description="pyradiomics normalizeScale: z-scores x this, so "
                                                            "binWidth 25 gives about 24 bins over +-3 SD")
    workers: int = Field(0, ge=0, le=MAX_PROCESSES, description="extraction processes; 0 = all cores")
    penalty: Literal["l2", "l1", "elasticnet"] = "l2"
    l1_ratio: float = Field(0.5, ge=0, le=1)
    c_grid: list[float] = Field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0])
    # Not ADDED_LATER on purpose: the new default (pool_cv) changes the baseline's C and so its results; being
    # hashed, it gives those runs new ids, while a config that says ``auto`` keeps the old rule and the old ids.
    selection: Literal["pool_cv", "auto", "val", "grouped_cv"] = Field(
        "pool_cv", description="how C is chosen: pool_cv = patient-grouped, stratified CV inside the N-pool (the "
                               "training subset and its proportional validation share, as a user with N images "
                               "would have); val = the validation split; grouped_cv = grouped CV on train + the "
                               "validation split; auto = the rule before issue 23 (grouped CV when the N-subset is "
                               "small, else the validation split)")

    @field_validator("feature_classes")
    @classmethod
    def _known_classes(cls, v):
        unknown = [c for c in v if c not in RADIOMICS_CLASSES]
        if unknown or not v:
            raise ValueError(f"unknown radiomics feature class(es) {unknown}; valid: {', '.join(RADIOMICS_CLASSES)}")
        return v

    @model_validator(mode="after")
    def _one_binning(self):
        if (self.bin_width is None) == (self.bin_count is None):
            raise ValueError("set exactly one of radiomics.bin_width and radiomics.bin_count")
        return self


class RunConfig(_Strict):
    data: DataConfig
    task: TaskConfig
    image_size: int = Field(224, ge=8, le=MAX_IMAGE_SIZE)
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    radiomics: RadiomicsConfig = RadiomicsConfig()

    def unhashed_keys(self) -> set[str]:
        """Dotted keys ``hashed_view`` leaves out although they may differ from their default: data.subset_by
        where the run trains on the data it trained on before the key existed (``images``; data without patient
        ids, where both draws are the same; or every training image with a fixed validation split). So a
        MedMNIST run or a source trained on all its images keeps its id, and a run whose subset the new draw
        changes gets a new one: an id never stands for two different subsets."""
        same = (self.data.subset_by == SUBSET_BY_BEFORE or not self.data.gives_patient_ids
                or (self.train.n_train == "all" and self.data.val_size == "fixed"))
        # a probe's head is the logistic regression's weights: the head's dropout is never applied
        probe = {"model.dropout"} if self.train.strategy == Strategy.PROBE else set()
        return probe | ({"data.subset_by"} if same else set())

    @model_validator(mode="after")
    def _task_fits_source(self):
        if self.data.source == "csv" and not self.task.label_column:
            raise ValueError("task.label_column is required for data.source=csv")
        if self.task.positive and self.task.kind != TaskKind.BINARY:
            raise ValueError("task.positive is only meaningful with task.kind=binary")
        return self


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating sections; the value is copied (a section-valued grid axis
    replaces the whole section, and no two runs share one mutable value)."""
    node = tree
    parts = dotted.split(".")
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):   # the tree holds a value where the key needs a section
            raise ConfigError(f"cannot set '{dotted}': '{'.'.join(parts[:i + 1])}' is {nxt!r}, not a section of keys")
        node = nxt
    node[parts[-1]] = copy.deepcopy(value)


def parse_overrides(pairs: list[str] | None) -> list[tuple[str, Any]]:
    """``key.sub=value`` strings -> (dotted key, YAML-typed value).

    Each key is checked against the config's shape here, before it touches any tree, so an error names
    the ``--set`` the user typed: ``--set train=5`` would otherwise replace the whole train section and be
    blamed later on whichever key (a grid axis, a section) tripped over it.
    """
    out = []
    for pair in pairs or []:
        shown = override_text(pair)
        if "=" not in pair:
            raise ConfigError(f"{shown}: expected key=value")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"{shown}: empty key")
        value = parse_yaml(raw, shown, lines=False) if raw.strip() else None
        check_override(key, value, shown)
        out.append((key, value))
    return out


def override_text(pair: str) -> str:
    """``--set KEY=VALUE`` as the user typed it, for an error to name; quoted when it holds a newline or
    other control character (the error must stay one line)."""
    return f"--set {pair}" if pair.isprintable() else f"--set {pair!r}"


def check_override(key: str, value: Any, shown: str) -> None:
    """A one-line ConfigError (prefixed ``shown``) when ``key`` is no config key, goes below a value, or
    sets a whole section to something that is not a mapping of its keys."""
    model: type[BaseModel] = RunConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        here = ".".join(parts[:i + 1])
        info = model.model_fields.get(part)
        if info is None:
            raise ConfigError(f"{shown}: unknown config key '{key}'{did_you_mean(key)}")
        annotation = info.annotation
        last = i == len(parts) - 1
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if last and not isinstance(value, dict):
                raise ConfigError(f"{shown}: '{here}' is a section, not a value (its keys: "
                                  f"{', '.join(annotation.model_fields)}); set one of them as {here}.KEY=VALUE")
            model = annotation
        elif not last:
            if _holds_mapping(annotation):   # data.partition, radiomics.image_types: free-form mappings
                return
            raise ConfigError(f"{shown}: unknown config key '{key}' ('{here}' is a value, not a section)")


def _holds_mapping(annotation: Any) -> bool:
    """True for a dict-typed field (``dict[str, float] | None`` included): its own keys are the user's."""
    from typing import get_args, get_origin

    if get_origin(annotation) is dict or annotation is dict:
        return True
    return any(_holds_mapping(a) for a in get_args(annotation))


def config_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Every dotted key of a run config, sections and leaves (``train``, ``train.epochs``, ...)."""
    keys = []
    for name, info in (model or RunConfig).model_fields.items():
        keys.append(prefix + name)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(config_keys(annotation, f"{prefix}{name}."))
    return keys


def did_you_mean(key: str, known: list[str] | None = None) -> str:
    """`` (did you mean 'train.epochs'?)`` for a near miss, else an empty string: a typo costs one glance."""
    import difflib

    close = difflib.get_close_matches(key, known if known is not None else config_keys(), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _format_validation_error(err: ValidationError, origin: str) -> str:
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown config key '{loc}'{did_you_mean(loc)}")
        elif e["type"] == "missing":
            problems.append(f"missing config key '{loc}'")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(f"'{loc}': {msg}" if loc else msg)
    return f"{origin}: " + "; ".join(problems)


def config_from_dict(tree: dict, overrides: list[str] | None = None, origin: str = "config") -> RunConfig:
    tree = copy.deepcopy(tree or {})   # an override must not reach into the caller's nested sections
    for key, value in parse_overrides(overrides):
        set_dotted(tree, key, value)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, origin)) from None


def parse_yaml(text: str, where: str, lines: bool = True) -> Any:
    """``yaml.safe_load(text)``, or a one-line ConfigError ``WHERE: line L: not valid YAML (problem)``.

    Every YAML the package reads (configs, study specs, ``--set`` values) comes through here, so a
    bad file or an unsafe tag (``!!python/object:...``: safe_load never builds objects) is one line
    naming the file and the line, never PyYAML's four-line excerpt with a caret. ``lines=False`` for a
    one-line text (a ``--set`` value), where a line number says nothing.
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error_line(err, text, where, lines)) from None


def yaml_error_line(err: yaml.YAMLError, text: str, where: str, lines: bool = True) -> str:
    """PyYAML's multi-line error as one line: the 1-based line of its mark, and the problem in words."""
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err).splitlines()[0]
    problem = " ".join(str(problem).replace("tag:yaml.org,2002:", "!!").split())
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is not None:
        line = mark.line + 1
    elif isinstance(getattr(err, "position", None), int):   # a ReaderError (a control character) has no mark
        line = text[:err.position].count("\n") + 1
    else:
        line = None
    at = f"line {line}: " if lines and line is not None else ""
    return f"{where}: {at}not valid YAML ({problem})"


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8): expected a YAML config or study spec") from None
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from None
    tree = parse_yaml(text, str(path)) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    return tree


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> RunConfig:
    tree = load_yaml(path)
    if isinstance(tree, dict) and "data" not in tree and ({"base", "grid"} & set(tree)):
        # a study spec given where one run is expected: one line saying so beats eight unknown keys
        raise ConfigError(f"{path} is a study spec (it has {' and '.join(k for k in ('base', 'grid') if k in tree)}), "
                          f"not a run config: run it with `medtransfer study run {path} --out STUDY_DIR`")
    return config_from_dict(tree, overrides, origin=str(path))


def canonical_json(payload: Any) -> str:
    """Sorted keys, no spaces: equal content gives equal text (what run ids and cache keys hash)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def hashed_view(model: BaseModel) -> dict:
    """``model_dump(mode="json")`` less the ADDED_LATER keys that are at their default and a section's
    ``unhashed_keys()``, with a section's ``hashed_overrides()`` in place (recursively)."""
    tree = model.model_dump(mode="json")
    _drop_added_defaults(model, tree)
    return tree


def _drop_added_defaults(model: BaseModel, tree: dict) -> None:
    for dotted in getattr(model, "unhashed_keys", set)():
        *sections, name = dotted.split(".")
        node = tree
        for section in sections:
            node = node.get(section, {})
        node.pop(name, None)
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            _drop_added_defaults(value, tree[name])
        elif (info.json_schema_extra or {}).get("added_later") and value == info.get_default(call_default_factory=True):
            tree.pop(name, None)
    tree.update(getattr(model, "hashed_overrides", dict)())


def written_config(tree: dict, origin: str) -> RunConfig:
    """A run folder's config.yaml (``dump_config`` writes every key) as a RunConfig. One written before
    ``data.subset_by`` existed has no such key: its subsets were drawn the old way, so it reads as
    ``SUBSET_BY_BEFORE``, not as today's default."""
    tree = copy.deepcopy(tree or {})
    if isinstance(tree.get("data"), dict):
        tree["data"].setdefault("subset_by", SUBSET_BY_BEFORE)
    if isinstance(tree.get("train"), dict):
        tree["train"].setdefault("selection", SELECTION_BEFORE)
    return config_from_dict(tree, origin=origin)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def resolve_data_root(flag: str | None = None) -> Path:
    """--data-root beats $MEDTRANSFER_DATA beats ~/.cache/medtransfer/data."""
    root = flag or os.environ.get("MEDTRANSFER_DATA") or DEFAULT_DATA_ROOT
    return Path(root).expanduser().resolve()


# Real data the package ships (see demo_data/README.md), so the main command runs offline on a fresh machine.
DEMO_DATA = Path(__file__).resolve().parent / "demo_data"


def resolve_path(path: str, data_root: Path) -> Path:
    """A data path relative to the data root; the demo bundle's copy when the root has none."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    wanted = Path(data_root) / p
    if not wanted.exists() and (DEMO_DATA / p).exists():
        return DEMO_DATA / p
    return wanted


def demo_note(path: Path, data_root: Path) -> list[str]:
    """The log line saying a dataset came from the demo bundle (empty when it did not)."""
    if Path(path).resolve().is_relative_to(DEMO_DATA):
        return [f"data: using the demo bundle's copy {path} (none under the data root {data_root})"]
    return []
