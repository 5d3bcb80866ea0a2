"""The advice document: what ``medtransfer advise`` found, as typed objects.

``Advice.to_json()`` is exactly ``advice.json`` and ``page.render_advice`` draws ``advice.html`` from the
same object, so the file and the page agree. A number the file records rounded (seconds) is read by the
page through the same rounding (``*_rounded`` properties of the search objects). The learning-curve block
stays the JSON-shaped dict ``workflow.learning_curve`` builds.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from ..evaluate.per_run import RunVerdict
from ..kinds import TaskKind
from .candidates import Candidate
from .rank import CandidateScore
from .plan import Arm, SearchPlan
from .search import HalvingResult


@dataclass(frozen=True)
class Gain:
    """The pick's expected gain over a reference initialisation, from the search's validation AUROCs."""
    versus: str
    reason: str | None = None          # why there is no number (unavailable, the pick itself, never trained ...)
    rung: int | None = None
    steps: int | None = None
    versus_recipe: str | None = None
    pick_val: float | None = None
    versus_val: float | None = None
    gain: float | None = None
    low: float | None = None
    high: float | None = None
    expected_test_versus: float | None = None

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Recommendation:
    """The pick trained with the full budget into OUT/best: its one evaluation on the test split, and how to
    train it again and use it."""
    pick: Arm
    steps: int
    search_val_auroc: float           # the pick's validation AUROC in the search, at ``search_steps``
    search_steps: int
    val_auroc: float | None           # the final run's
    test_auroc: float | None
    test_auroc_ci: dict | None        # metrics.json's test "auroc_ci" block (None: AUROC undefined)
    test_operating_point: dict | None
    run: Path                         # OUT/best
    config: Path                      # OUT/best/config.yaml
    command: str                      # the ``medtransfer train`` line that reproduces the run
    note: str | None                  # the pick's candidate note (e.g. another arch)
    verdict: RunVerdict | None = None  # the final run's (metrics.json): its baselines and what to suspect

    @property
    def recipe(self) -> str:
        return self.pick.label

    @property
    def why_not(self) -> str | None:
        """Why the kept model is no recommendation (None: it is one): its test 95% interval reaches 0.5 (or it has
        none), or it is not shown better than a simple baseline fitted on the same training images and tested on
        the same test images (the pixel-intensity logistic regression, ``runs.baselines``); then what to suspect
        (validation and test disagreeing, a small test split). The model is still kept, marked, so the user can
        look at it."""
        low = (self.test_auroc_ci or {}).get("low")
        why = []
        if self.test_auroc is None or low is None:
            why.append("its test AUROC has no interval, so it is not shown better than chance")
        elif low <= 0.5:
            why.append(f"its test 95% interval ({low:.3f} to {self.test_auroc_ci.get('high', float('nan')):.3f}) "
                       "contains 0.5: it is not shown better than chance")
        verdict = self.verdict
        why += [f"it is not shown better than the {b.baseline} baseline on the same split (its test AUROC "
                f"{b.auroc:.3f}; difference {b.difference:+.3f}, 95% CI {b.diff_low:+.3f} to {b.diff_high:+.3f})"
                for b in (verdict.baselines if verdict else ()) if not b.beats]
        if not why:
            return None
        return "; ".join(why + [f"suspect: {s}" for s in (verdict.suspect if verdict else ())])

    @property
    def recommended(self) -> bool:
        return self.why_not is None

    @property
    def predict(self) -> str:
        """The ``medtransfer predict`` line that scores new images with the kept model."""
        return f"medtransfer predict --run {shlex.quote(str(self.run))} IMAGE [IMAGE ...]"

    def to_json(self) -> dict:
        return {"recipe": self.recipe, **self.pick.to_json(), "steps": self.steps,
                "search_val_auroc": self.search_val_auroc, "search_steps": self.search_steps,
                "val_auroc": self.val_auroc, "test_auroc": self.test_auroc, "test_auroc_ci": self.test_auroc_ci,
                "test_operating_point": self.test_operating_point, "run": str(self.run), "config": str(self.config),
                "command": self.command, "predict": self.predict, "note": self.note,
                "recommended": self.recommended, "why_not": self.why_not,
                "baselines": [b.to_json() for b in self.verdict.baselines] if self.verdict else [],
                "suspect": list(self.verdict.suspect) if self.verdict else []}


@dataclass(frozen=True)
class Advice:
    """Everything ``advise`` decided and measured: the data it saw, the ranking, the search, the pick, the
    expected gains and the learning curve. Paths and values are as the user gave them."""
    config: Path
    data_root: Path
    overrides: list[str]
    study: str | Path | None          # --study as given (None: not given)
    task_kind: TaskKind
    labels: list[str]
    n_train: int
    n_train_patients: int
    n_val: int
    n_test: int
    budget_seconds: float
    seconds: float                    # wall time of the whole advise, to 0.1 s
    candidates: list[Candidate]
    ranking_method: str
    scores: list[CandidateScore]      # in ranking order (unusable ones last)
    plan: SearchPlan
    search: HalvingResult
    recommendation: Recommendation
    gains: list[Gain]
    learning_curve: dict              # ``workflow.learning_curve``'s block, JSON as built
    notes: list[str]

    def to_json(self) -> dict:
        """advice.json: the keys, their order and their values."""
        return {
            "config": str(self.config), "data_root": str(self.data_root), "overrides": self.overrides,
            "study": None if self.study is None else str(self.study),
            "task_kind": self.task_kind, "labels": self.labels, "n_train": self.n_train,
            "n_train_patients": self.n_train_patients, "n_val": self.n_val, "n_test": self.n_test,
            "budget_seconds": self.budget_seconds, "seconds": self.seconds,
            "candidates": [c.to_json() for c in self.candidates],
            "ranking": {"method": self.ranking_method, "scores": [s.to_json() for s in self.scores]},
            "plan": self.plan.to_json(),
            "search": self.search.to_json(),
            "recommendation": self.recommendation.to_json(),
            "gains": [g.to_json() for g in self.gains],
            "learning_curve": self.learning_curve,
            "notes": self.notes,
        }
