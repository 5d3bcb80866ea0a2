"""Studies: a YAML grid of train runs, executed resumably (local or Ray) into a SQLite store.

``run_study`` is what ``medtransfer study run`` calls; ``study_status`` is ``study status``.
"""
from .grid import Plan, PlannedRun, expand
from .execute import StudyOptions, StudySummary, plan_study, run_study
from .spec import StudySpec, load_spec
from .status import study_status
from .store import Store

__all__ = ["Plan", "PlannedRun", "Store", "StudyOptions", "StudySpec", "StudySummary", "expand", "load_spec", "plan_study",
           "run_study", "study_status"]
