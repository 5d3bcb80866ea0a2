"""The project's small vocabularies as types, so no layer decodes meaning from a string.

``Init`` is the value of ``model.init``: parsed once (by the config), matched on everywhere
else. Its string form (``scratch``, ``imagenet``, ``pretrained``, ``checkpoint:PATH``, ``source:NAME``, ``xrv:NAME``) is the
YAML / CLI syntax and what run ids hash, so adding a kind never changes an existing id.
The ``StrEnum``s compare equal to their old string values, so the SQLite store and the JSON
files keep exactly the text they always had.
"""
from __future__ import annotations

import re

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

try:
    from enum import StrEnum
except ImportError:  # Python 3.10
    class StrEnum(str, Enum):  # type: ignore[no-redef]
        def __str__(self) -> str:
            return str(self.value)


class RunStatus(StrEnum):
    """Where a run of a study stands. ``pending`` is never stored: it is the absence of a row."""
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    PENDING = "pending"


class RunMethod(StrEnum):
    """What a run fits: a CNN recipe, or the radiomics + logistic-regression baseline."""
    CNN = "cnn"
    RADIOMICS = "radiomics"


class RunRole(StrEnum):
    """A study's pretraining source, or a run of its grid."""
    SOURCE = "source"
    GRID = "grid"


class TaskKind(StrEnum):
    """``task.kind``: what a label is (one finding, one of C classes, or several findings at once)."""
    MULTILABEL = "multilabel"
    BINARY = "binary"
    MULTICLASS = "multiclass"


def auroc_name(kind: TaskKind | str | None) -> str:
    """The headline AUROC's name for a task kind, in what the user reads (logs, CLI lines, pages): a binary task
    has one label, so nothing is averaged and "macro AUROC" would suggest findings that are not there; a
    multilabel or multiclass task's is the mean over findings or classes (and an unknown kind keeps that name)."""
    return "AUROC" if kind == TaskKind.BINARY else "macro AUROC"


class Strategy(StrEnum):
    """``train.strategy``: which layer groups train (the head only, all, or thawed in stages), or ``probe``: no
    layer trains with an optimiser; a logistic regression on the frozen backbone's features becomes the head."""
    FROZEN = "frozen"
    FULL = "full"
    GRADUAL = "gradual"
    PROBE = "probe"


class SelectionKind(StrEnum):
    """How a run chooses its training length (and the study its recipe): on the held-out validation images,
    or by patient-grouped cross-validation over the N-pool (``train.selection``; ``auto`` resolves to one)."""
    HOLDOUT = "holdout"
    CV = "cv"


class TestEstimateKind(StrEnum):
    """How a run's test performance is estimated (``train.test_estimate``; ``auto`` resolves to one): on its one
    held-out test split, or by patient-grouped outer cross-validation over the whole labelled set
    (``runs.outer_cv``), for a test split too small to estimate anything."""
    __test__ = False   # not a pytest class, whatever its name
    SPLIT = "split"
    OUTER_CV = "outer_cv"


class Site(StrEnum):
    """Where a study's pretraining source was acquired, relative to the target data."""
    SAME = "same"
    OTHER = "other"


class ThresholdCriterion(StrEnum):
    """How an operating threshold is chosen. The kind only: the text stored in threshold.json and
    metrics.json is ``evaluate.threshold.Criterion``'s (``sensitivity>=0.95`` for a target sensitivity)."""
    YOUDEN = "youden"
    SENSITIVITY = "sensitivity"
    GIVEN = "given"


class CrossoverOutcome(StrEnum):
    """Why a crossing N (``evaluate.crossover``) is None: codes, never shown; the report (and answer.json)
    show ``evaluate.crossover.outcome_text`` of them."""
    ALREADY = "already"          # at or above the bound from the smallest studied N on
    NEVER = "never"              # not past the bound at the largest studied N
    NO_INTERVAL = "no_interval"  # no finite bound at any N
    NO_PAIRS = "no_pairs"        # no (N, seed) run of both methods
    NO_TEST = "no_test"          # one seed per N and no DeLong interval


class InitKind(StrEnum):
    SCRATCH = "scratch"
    IMAGENET = "imagenet"
    CHECKPOINT = "checkpoint"
    SOURCE = "source"
    XRV = "xrv"           # torchxrayvision's published chest X-ray weights, by name
    PRETRAINED = "pretrained"   # the weights a published backbone's repository holds (PUBLISHED_ARCH_PREFIXES)


_NAMED = (InitKind.SCRATCH, InitKind.IMAGENET, InitKind.PRETRAINED)          # written as the bare word
_REFERRING = (InitKind.CHECKPOINT, InitKind.SOURCE, InitKind.XRV)     # written as KIND:REF
_FORMS = "scratch, imagenet, pretrained, checkpoint:PATH, source:NAME or xrv:NAME"


@dataclass(frozen=True)
class Init:
    """Where a model's starting weights come from.

    ``ref`` is the checkpoint path as given (``checkpoint``), the study source's name
    (``source``) or torchxrayvision's weights name (``xrv``, e.g. ``densenet121-res224-all``),
    empty otherwise. ``Init.parse(str(init)) == init`` always holds.
    """
    kind: InitKind
    ref: str = ""

    @classmethod
    def parse(cls, text: "str | Init") -> "Init":
        """``scratch`` | ``imagenet`` | ``pretrained`` | ``checkpoint:PATH`` | ``source:NAME`` | ``xrv:NAME``; ValueError
        otherwise.

        An ``xrv`` name is not checked against torchxrayvision's list here: the config does
        that (with model.arch), so a store row written by a newer version still parses.
        """
        if isinstance(text, Init):
            return text
        if not isinstance(text, str):
            raise ValueError(f"model.init must be a string: {_FORMS}, got {text!r}")
        if text in _NAMED:
            return cls(InitKind(text))
        head, sep, ref = text.partition(":")
        if sep and head in _REFERRING and ref.strip():
            return cls(InitKind(head), ref)   # kept verbatim: the string form is what run ids hash
        raise ValueError(f"model.init must be {_FORMS}, got {text!r}")

    @classmethod
    def checkpoint(cls, path: "str | Path") -> "Init":
        return cls(InitKind.CHECKPOINT, str(path))

    @classmethod
    def source(cls, name: str) -> "Init":
        return cls(InitKind.SOURCE, name)

    @classmethod
    def xrv(cls, name: str) -> "Init":
        return cls(InitKind.XRV, name)

    @property
    def path(self) -> Path:
        """The checkpoint file or run folder (``checkpoint`` only)."""
        if self.kind is not InitKind.CHECKPOINT:
            raise ValueError(f"model.init {self} names no checkpoint path")
        return Path(self.ref.strip()).expanduser()

    @property
    def source_name(self) -> str:
        if self.kind is not InitKind.SOURCE:
            raise ValueError(f"model.init {self} names no study source")
        return self.ref.strip()

    @property
    def xrv_name(self) -> str:
        """torchxrayvision's weights name (``xrv`` only), e.g. ``densenet121-res224-all``."""
        if self.kind is not InitKind.XRV:
            raise ValueError(f"model.init {self} names no torchxrayvision weights")
        return self.ref.strip()

    @property
    def is_source(self) -> bool:
        return self.kind is InitKind.SOURCE

    def __str__(self) -> str:
        return self.kind.value if self.kind in _NAMED else f"{self.kind.value}:{self.ref}"


SCRATCH = Init(InitKind.SCRATCH)
IMAGENET = Init(InitKind.IMAGENET)
PRETRAINED = Init(InitKind.PRETRAINED)


# model.arch forms whose backbone is loaded as its authors publish it: a Hugging Face repository read by its own
# library (transformers, open_clip, timm), with the repository's input size and normalisation (models/published.py).
# Their weights are the repository's (model.init: pretrained), not ImageNet's; any other arch has no repository.
PUBLISHED_ARCH_PREFIXES = ("hf:", "openclip:", "timm:hf-hub:")
PUBLISHED_ARCH_FORMS = "hf:ORG/NAME, openclip:hf-hub:ORG/NAME or timm:hf-hub:ORG/NAME"


def is_published_arch(arch: str) -> bool:
    """True for a ``model.arch`` loaded from a published repository (:data:`PUBLISHED_ARCH_PREFIXES`)."""
    return any(arch.startswith(p) and len(arch) > len(p) for p in PUBLISHED_ARCH_PREFIXES)


_REPO_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?/[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$")


def published_repo_problem(arch: str) -> str | None:
    """Why a published backbone's ``model.arch`` names no Hugging Face repository (None when it names one, or is no
    published arch): ``ORG/NAME``, letters, digits, ``_ . -``, no ``..``, as the Hub accepts them; checked before
    any library sees it, whose own refusal is a traceback."""
    if not is_published_arch(arch):
        return None
    repo = arch.split(":", 1)[1].removeprefix("hf-hub:")
    if _REPO_ID.match(repo) and ".." not in repo and len(repo) <= 96:
        return None
    return f"model.arch {arch!r}: {repo!r} is not a Hugging Face repository id ORG/NAME (expected {PUBLISHED_ARCH_FORMS})"


def published_init_problem(arch: str, init: Init) -> str | None:
    """Why ``init`` cannot start ``arch`` where one of the two is a published backbone (None when it can).

    ``pretrained`` names a repository's own weights, so it needs an arch that has a repository; such an arch's
    weights are not ImageNet's (RAD-DINO's are chest X-rays, DINOv2's LVD-142M), so ``imagenet`` would name them
    wrongly in every log and report. Checked by the config and by ``models.create_model`` alike.
    """
    repo = published_repo_problem(arch)
    if repo:
        return repo
    if init.kind is InitKind.PRETRAINED and not is_published_arch(arch):
        return (f"model.init pretrained loads a published backbone's own weights: model.arch must be "
                f"{PUBLISHED_ARCH_FORMS} (got {arch!r}; its ImageNet weights are model.init imagenet)")
    if init.kind is InitKind.IMAGENET and is_published_arch(arch):
        return f"model.arch {arch} is a published backbone: its weights are model.init pretrained, not imagenet"
    return None
