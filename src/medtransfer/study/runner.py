"""The old import path of ``study.execute`` (renamed in issue 22: it executes a study, and four other
modules were called "run" too). Scripts and the pinned run-id test import ``plan_study`` from here;
new code imports from ``medtransfer.study`` or ``medtransfer.study.execute``."""
from .execute import StudyOptions, StudySummary, plan_study, run_study

__all__ = ["StudyOptions", "StudySummary", "plan_study", "run_study"]
