"""A study's time left, from the dry-run probe before the first run ends, then calibrated by the runs that end.

rich's own ETA needs several finished runs before it says anything, and a study's runs differ
by 100x in cost (N = 50 vs all, a source pretraining), so a mean time per run misleads. The
probe prices each run (``dryrun.estimate_time``'s ``per_run``); once runs end, their measured
time over their priced time rescales what is left, so a probe that is 3x pessimistic on this
machine stops misleading after the first few runs.
"""
from __future__ import annotations

from rich.progress import ProgressColumn, Task
from rich.text import Text

from ..durations import format_duration


class StudyEta:
    """Seconds left for the pending runs: probe prices x (measured / priced so far), over the parallel runs."""

    def __init__(self, priced: dict[str, float], pending: list[str], parallel: int = 1):
        self._priced = dict(priced)
        self._pending = set(pending)
        self._parallel = max(1, parallel)
        self._measured = 0.0
        self._priced_done = 0.0

    def finished(self, run_id: str, seconds: float) -> None:
        self._pending.discard(run_id)
        if run_id in self._priced and seconds > 0:
            self._measured += seconds
            self._priced_done += self._priced[run_id]

    @property
    def calibrated(self) -> bool:
        return self._priced_done > 0

    @property
    def unpriced(self) -> int:
        """Pending runs the probe could not price (e.g. their data was unreadable): left out of the ETA."""
        return sum(1 for r in self._pending if r not in self._priced)

    def seconds_left(self) -> float | None:
        priced = [self._priced[r] for r in self._pending if r in self._priced]
        if not priced and self._pending:
            return None
        scale = self._measured / self._priced_done if self._priced_done > 0 else 1.0
        return sum(priced) * scale / self._parallel

    def describe(self) -> str:
        left = self.seconds_left()
        if left is None:
            return "ETA unknown"
        source = "measured" if self.calibrated else "probe"
        extra = f", {self.unpriced} run(s) not priced" if self.unpriced else ""
        return f"ETA ~{format_duration(left)} ({source}{extra})"


class EtaColumn(ProgressColumn):
    """Shows the task's ``eta`` field (a StudyEta), or rich's blank when there is none."""

    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta")
        return Text(eta.describe() if eta is not None else "", style="progress.remaining")
