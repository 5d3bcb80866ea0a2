"""The run-folder protocol every method shares: the writing side of ``medtransfer.run_folder``.

config.yaml first (``open_run_folder``), train.log throughout (``RunLog``), metrics.json last and
atomically (``write_finished``: its presence means the run finished), failed.json with the reason
when the run fails (``record_failure``). ``recorded_run`` wraps one run's body in all of it; a pack
of CNN runs (``runs.packs``) calls the same pieces, one folder per run.
"""
from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from ..config import RunConfig, dump_config
from ..errors import MedtransferError
from ..evaluate.per_run import RunVerdict
from ..kinds import auroc_name
from ..run_folder import RunFolder, RunMetrics

Log = Callable[[str], None]
RunBody = Callable[[RunFolder, Log, float], RunMetrics]   # (folder, log, started) -> what the run measured


class RunLog:
    """Write each line to train.log (flushed, so a killed run keeps its log) and to stderr."""

    def __init__(self, path: Path, echo: bool = True):
        self._file = open(path, "a", encoding="utf-8")
        self._echo = echo

    def __call__(self, line: str) -> None:
        stamped = f"{time.strftime('%H:%M:%S')} {line}"
        try:
            self._file.write(stamped + "\n")
            self._file.flush()
        except OSError:   # a full disk must not hide the error being logged; stderr still shows it
            pass
        if self._echo:
            print(stamped, file=sys.stderr, flush=True)

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass


def open_run_folder(cfg: RunConfig, out: Path, overwrite: bool) -> RunFolder:
    """A new run's folder, emptied of an earlier run's results, with its config.yaml written first."""
    folder = RunFolder(out)
    folder.prepare(overwrite)
    folder.write_config(dump_config(cfg))
    return folder


def recorded_run(cfg: RunConfig, out: Path, overwrite: bool, echo: bool, body: RunBody) -> RunMetrics:
    """The run-folder protocol around ``body``: config.yaml first, train.log throughout, metrics.json
    last (written here from what ``body`` returns), failed.json with the reason when it raises."""
    folder = open_run_folder(cfg, out, overwrite)
    log = RunLog(folder.log_path, echo=echo)
    started = time.time()
    try:
        return write_finished(folder, log, body(folder, log, started))
    except BaseException as err:  # record why, then let the caller decide how to exit
        record_failure(folder, log, err, started)
        raise
    finally:
        log.close()


def verdict_lines(metrics: RunMetrics) -> list[str]:
    """The run's verdict in plain words (``evaluate.per_run.RunVerdict``): better than chance or not, better than
    each baseline on the same split or not, what to suspect; [] for a run from before verdicts."""
    block = metrics.block("test")
    verdict = RunVerdict.from_details(metrics.auroc("test"), block.auroc_ci if block is not None else None,
                                      metrics.details)
    return verdict.lines() if verdict is not None else []


def write_finished(folder: RunFolder, log: Log, metrics: RunMetrics) -> RunMetrics:
    """The end of a run: its verdict first, then its test AUROC in the log, then metrics.json (whose presence
    means "finished")."""
    for line in verdict_lines(metrics):
        log(line)
    test_auc = metrics.auroc("test")
    name = auroc_name(metrics.task_kind)
    log(f"test {name} {test_auc:.4f}" if test_auc is not None else f"test {name} undefined")
    folder.write_metrics(metrics)
    return metrics


def record_failure(folder: RunFolder, log: Log, err: BaseException, started: float) -> None:
    """failed.json with the reason, and the reason (a traceback for a bug) in train.log."""
    reason = str(err) if isinstance(err, MedtransferError) else f"{type(err).__name__}: {err}"
    if isinstance(err, KeyboardInterrupt):
        reason = "interrupted"
    log(f"FAILED: {reason}")
    if not isinstance(err, MedtransferError) and err.__traceback__ is not None:
        log("".join(traceback.format_exception(err)))
    try:
        folder.write_failed(reason, type(err).__name__, time.time() - started)
    except MedtransferError as also:   # e.g. the disk is full: the original error still explains the run
        log(f"could not record the failure: {also}")
