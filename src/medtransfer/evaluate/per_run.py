"""One run's test AUROC with its patient-level bootstrap interval, and the resample draws behind it.

Every finished run (CNN and radiomics) stores this: the interval says how much the test set's luck
moves the number, and the draws (same seed, same test images and patients -> the *same* patient
resamples for every run of a study) let the report combine seeds with test sampling and pair
recipes without reading predictions again.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..kinds import TaskKind
from .bootstrap import bootstrap_auroc_samples
from .metrics import one_vs_rest_targets, score_metrics
from .summary import cv_corrected_ci
from .uncertainty import paired_difference_interval

RUN_BOOTSTRAP_N = 1000      # resamples per run: a 95% percentile interval's ends move by ~0.002 AUROC between draws
RUN_BOOTSTRAP_SEED = 0      # fixed for every run, so runs on the same test images share their resamples
LEVEL = 0.95
SMALL_TEST_CLASS = 30       # patients of a class in a test split below which one split is a rough estimate


@dataclass(frozen=True)
class RunInterval:
    """A run's test macro AUROC, its percentile interval, and the resampled values (float32, in draw order)."""
    auroc: float
    low: float
    high: float
    unit: str               # "patients" or "images": what was resampled
    draws: np.ndarray
    test_set: str           # fingerprint of the test images and their clusters: only equal ones share resamples

    def to_json(self) -> dict:
        return {"low": self.low, "high": self.high, "level": LEVEL, "n_boot": int(len(self.draws)),
                "test_set": self.test_set,
                "resampled": self.unit, "method": f"percentile interval over {len(self.draws)} bootstrap resamples "
                                                  f"of the test {self.unit}"}


def test_set_fingerprint(image_ids, clusters) -> str:
    """Two runs' draws share their patient resamples only when they scored the same images with the same
    clusters; this 16-hex-digit hash of the (image, cluster) pairs says whether they did."""
    pairs = sorted(f"{i}\t{c}" for i, c in zip(image_ids, clusters))
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()[:16]


def run_interval(labels: np.ndarray, scores: np.ndarray, kind: TaskKind, clusters, by_patient: bool, image_ids,
                 n_boot: int = RUN_BOOTSTRAP_N, seed: int = RUN_BOOTSTRAP_SEED) -> RunInterval | None:
    """The test interval of one run; None when its macro AUROC is undefined (no label has both classes).

    ``clusters``: one id per test image (patient ids when ``by_patient``, else image ids).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    targets = one_vs_rest_targets(labels, kind, scores.shape[1])
    point = score_metrics(labels, scores, kind, [str(k) for k in range(scores.shape[1])]).auroc_macro
    if point is None:
        return None
    try:
        draws = bootstrap_auroc_samples(targets, scores, np.asarray(clusters), n_boot=n_boot, seed=seed)
    except DataError:
        return None
    low, high = np.quantile(draws, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return RunInterval(float(point), float(low), float(high), "patients" if by_patient else "images",
                       draws.astype(np.float32), test_set_fingerprint(image_ids, clusters))


def class_names(label_names: list[str], kind: TaskKind) -> list[str]:
    """The classes a split is stratified and counted on (``data.strata_matrix``'s columns): a binary task's
    negative and positive, else its labels."""
    return [f"not {label_names[0]}", label_names[0]] if kind == TaskKind.BINARY else list(label_names)


def patients_per_class(labels: np.ndarray, kind: TaskKind, clusters, names: list[str]) -> dict[str, int]:
    """Distinct patients (``clusters``: one id per image) of each class present in a split, by class name.

    A binary task's classes are its negatives and its positives (``names``: both, negative first); multiclass,
    each class; multilabel, each finding's positives. A test AUROC rests on the rarest of these: with a dozen
    patients of one class, one split is a rough estimate however its interval looks (``SMALL_TEST_CLASS``)."""
    y = np.asarray(labels)
    if kind == TaskKind.MULTICLASS:
        columns = np.eye(len(names), dtype=bool)[y.astype(int).ravel()]
    else:
        columns = y.reshape(len(y), -1) > 0.5
        if kind == TaskKind.BINARY:
            columns = np.column_stack([~columns[:, 0], columns[:, 0]])
    clusters = np.asarray(clusters)
    counts = {str(name): len(np.unique(clusters[columns[:, c]])) for c, name in enumerate(names)}
    return {name: n for name, n in counts.items() if n > 0}


def fewest_patients(counts: dict[str, int]) -> tuple[str, int] | None:
    """The class with the fewest patients in ``patients_per_class``'s counts (the first on a tie); None if empty."""
    return min(counts.items(), key=lambda item: item[1]) if counts else None
CHANCE = 0.5
DISAGREE_Z = 1.96     # |validation - test| beyond this many standard errors of the difference: the splits disagree


def _signed(x: float) -> str:
    return f"{x:+.3f}"


@dataclass(frozen=True)
class BaselineComparison:
    """A run's model against a simple baseline fitted on the same training images and scored on the same test
    images: the baseline's test AUROC with its interval, and model - baseline paired on the same patient
    resamples (``evaluate.uncertainty.paired_difference_interval`` with one seed: the test level only)."""
    baseline: str          # its name on the page, e.g. "pixels + LR"
    auroc: float
    low: float
    high: float
    difference: float      # model - baseline, full test set
    diff_low: float
    diff_high: float
    how: str = ""          # how it was fitted (features, C and what C was chosen on)

    @property
    def beats(self) -> bool:
        """The model is shown better than the baseline: the paired difference's 95% interval lies above 0."""
        return self.diff_low > 0

    def line(self) -> str:
        """One plain sentence: better than the baseline or not, with the numbers."""
        said = "better than" if self.beats else "NOT shown better than"
        return (f"{said} the {self.baseline} baseline on the same split (its test AUROC {self.auroc:.3f}, 95% CI "
                f"{self.low:.3f} to {self.high:.3f}): difference {_signed(self.difference)} (95% CI "
                f"{_signed(self.diff_low)} to {_signed(self.diff_high)}, paired on the test patients)")

    def to_json(self) -> dict:
        return {"baseline": self.baseline, "test_auroc": self.auroc, "ci_low": self.low, "ci_high": self.high,
                "difference": self.difference, "difference_ci_low": self.diff_low,
                "difference_ci_high": self.diff_high, "beats": self.beats, "how": self.how}

    @classmethod
    def from_json(cls, payload) -> "BaselineComparison | None":
        """The record as metrics.json holds it (None for anything else, e.g. a run from before it existed)."""
        keys = ("test_auroc", "ci_low", "ci_high", "difference", "difference_ci_low", "difference_ci_high")
        if not isinstance(payload, dict) or any(not isinstance(payload.get(k), (int, float)) for k in keys):
            return None
        return cls(str(payload.get("baseline")), *(float(payload[k]) for k in keys), str(payload.get("how") or ""))


def compare_with_baseline(model: RunInterval, baseline: RunInterval, name: str, how: str = ""
                          ) -> BaselineComparison | None:
    """Model minus baseline on the same patient resamples; None unless both were resampled on one test set."""
    if model.test_set != baseline.test_set or len(model.draws) != len(baseline.draws):
        return None
    diff = paired_difference_interval(model.draws[None, :], [model.auroc], baseline.draws[None, :],
                                      [baseline.auroc], level=LEVEL)
    return BaselineComparison(name, baseline.auroc, baseline.low, baseline.high, diff.estimate, diff.low,
                              diff.high, how)


@dataclass(frozen=True)
class SplitEstimate:
    """One split's AUROC with its 95% interval and standard error, and what it is in words ("validation AUROC")."""
    auroc: float
    low: float
    high: float
    se: float
    what: str

    @classmethod
    def of(cls, interval: RunInterval, what: str) -> "SplitEstimate":
        """From a patient-bootstrap interval (its standard error: the draws' standard deviation)."""
        se = float(np.std(interval.draws, ddof=1)) if len(interval.draws) > 1 else float("nan")
        return cls(interval.auroc, interval.low, interval.high, se, what)

    @classmethod
    def of_folds(cls, fold_auroc) -> "SplitEstimate | None":
        """A cross-validated run's: the mean fold AUROC with the Nadeau-Bengio corrected interval (the folds'
        pooled out-of-fold scores come from different models, so their AUROC is not the one the run chose on)."""
        got = cv_corrected_ci([v for v in fold_auroc if v is not None], len(fold_auroc))
        if not np.isfinite(got.low):
            return None
        return cls(got.mean, got.low, got.high, got.sd, f"cross-validated AUROC (mean of {len(fold_auroc)} folds)")


def split_disagreement(val: SplitEstimate | None, test: SplitEstimate | None) -> str | None:
    """A reason to suspect the test number, or None: validation and test disagree.

    Either the two AUROCs differ by more than ``DISAGREE_Z`` standard errors of their difference (validation and
    test hold different patients, so the variances add), or validation shows the model better than chance, test
    does not, and the test estimate lies below the validation interval (a test interval that is merely wide is
    uncertainty, not disagreement). Either way one split is not like the other (a shift between them, a leak into
    one, a validation score chosen on too often, or a split too small to say much)."""
    if val is None or test is None:
        return None
    gap, se = val.auroc - test.auroc, float(np.hypot(val.se, test.se))
    shown = (f"{val.what} {val.auroc:.3f} (95% CI {val.low:.3f} to {val.high:.3f}) and {test.what} "
             f"{test.auroc:.3f} ({test.low:.3f} to {test.high:.3f})")
    if np.isfinite(se) and se > 0 and abs(gap) > DISAGREE_Z * se:
        return (f"{shown} disagree beyond their uncertainty (difference {_signed(gap)}, {abs(gap) / se:.1f} standard "
                "errors): the splits differ (a shift between them, a leak into one, or a validation score chosen on "
                "too often)")
    if val.low > CHANCE >= test.low and test.auroc < val.low:
        return (f"{shown} disagree: validation shows the model better than chance and test does not (suspect a "
                "validation split too small or chosen on too often, or a shift between the splits)")
    return None


@dataclass(frozen=True)
class RunVerdict:
    """What a reader of one run must know first (issue 24): is the model better than chance (its test 95% interval
    above 0.5), is it better than each simple baseline run on the same split, and what to suspect when it is not
    (``suspect``: a small test split, validation and test disagreeing). metrics.json keeps it as ``verdict``
    beside ``baselines``; ``lines`` says it in plain words, first in train.log's closing lines and in the
    command's output."""
    auroc: float | None
    low: float | None
    high: float | None
    baselines: tuple[BaselineComparison, ...] = ()
    suspect: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()      # baselines that could not be compared, each with why
    small_test: str | None = None      # the one of ``suspect`` about the test split's size (a study's verdict repeats it)

    @property
    def beats_chance(self) -> bool | None:
        return None if self.low is None else bool(self.low > CHANCE)

    @property
    def beats_baselines(self) -> bool | None:
        """True when every compared baseline is beaten, False when one is not, None when none was compared."""
        return None if not self.baselines else all(b.beats for b in self.baselines)

    @property
    def usable(self) -> bool:
        return self.beats_chance is True and self.beats_baselines is not False

    def lines(self) -> list[str]:
        if self.low is None:
            first = "not shown better than chance: its test AUROC has no interval (undefined on this test split)"
        elif self.beats_chance:
            first = (f"better than chance: test AUROC {self.auroc:.3f}, 95% CI {self.low:.3f} to {self.high:.3f}, "
                     "lies above 0.5")
        else:
            first = (f"no better than chance: test AUROC {self.auroc:.3f}, its 95% CI {self.low:.3f} to "
                     f"{self.high:.3f} contains 0.5")
        out = [f"verdict: {first}"] + [f"verdict: {b.line()}" for b in self.baselines]
        out += [f"verdict: no comparison with {m}" for m in self.missing]
        return out + [f"suspect: {s}" for s in self.suspect]

    def to_json(self) -> dict:
        return {"beats_chance": self.beats_chance, "beats_baselines": self.beats_baselines,
                "usable": self.usable, "suspect": list(self.suspect), "small_test_split": self.small_test,
                "not_compared": list(self.missing),
                "lines": self.lines()}

    @classmethod
    def from_details(cls, test_auroc: float | None, auroc_ci: dict | None, details: dict) -> "RunVerdict | None":
        """The verdict of a finished run from metrics.json (its test AUROC and interval, ``details``'s
        ``verdict`` and ``baselines``); None for a run from before verdicts were recorded."""
        recorded = details.get("verdict") if isinstance(details, dict) else None
        if not isinstance(recorded, dict):
            return None
        ci = auroc_ci if isinstance(auroc_ci, dict) else {}
        baselines = tuple(b for b in (BaselineComparison.from_json(p) for p in details.get("baselines") or [])
                          if b is not None)
        return cls(test_auroc, ci.get("low"), ci.get("high"), baselines,
                   tuple(str(s) for s in recorded.get("suspect") or []),
                   tuple(str(s) for s in recorded.get("not_compared") or []),
                   recorded.get("small_test_split") if isinstance(recorded.get("small_test_split"), str) else None)
