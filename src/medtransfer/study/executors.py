"""Where runs execute: in this process, in K local processes, or as Ray tasks.

Every executor takes the same jobs and yields ``(run_id, Outcome)`` as runs finish; the
driver alone writes the store. A run's own failure is an Outcome, never an exception, so
one bad run cannot stop the study. ``run_fn`` is a parameter (default: ``run_by_method``,
which sends CNN runs to ``medtransfer.runs.train_run`` and radiomics baseline runs to
``medtransfer.radiomics.radiomics_run``) so tests and other run kinds can plug in. A job of
a method other than 'cnn' calls ``run_fn`` with ``method=...`` as well, so a run function
that serves a study with baselines must accept that keyword.
"""
from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..config import RunConfig
from ..errors import MedtransferError, WeightsUnavailable
from .store import utc_now

RunFn = Callable[..., dict]
METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "model.safetensors"


def default_run_fn() -> RunFn:
    return run_by_method


def run_by_method(cfg: RunConfig, out: Path, data_root: Path, *, method: str = "cnn", **kw) -> dict:
    """The real run of a study job: train a CNN, or fit the radiomics baseline."""
    if method == "radiomics":
        from ..radiomics.run import radiomics_run

        return radiomics_run(cfg, out, data_root, **kw)
    if method != "cnn":
        raise MedtransferError(f"unknown run method {method!r} (known: cnn, radiomics)")
    from ..runs import train_run

    return train_run(cfg, out, data_root, **kw)


@dataclass(frozen=True)
class Job:
    run_id: str
    config: RunConfig        # model.init resolved (source:NAME -> checkpoint:<abs path>)
    out: Path                # absolute run folder
    data_root: Path
    threads: int | None = None
    keep_weights: bool = True   # False: delete model.safetensors once metrics.json is written
    method: str = "cnn"         # 'cnn' | 'radiomics': passed to run_fn as method= when not 'cnn'


@dataclass(frozen=True)
class Outcome:
    status: str              # 'done' | 'failed' | 'skipped'
    metrics: dict | None
    reason: str | None
    started_at: str
    finished_at: str
    seconds: float


def run_one(job: Job, run_fn: RunFn) -> Outcome:
    """Run one job and turn every ordinary failure into an Outcome (interrupts still propagate)."""
    _isolate(job)
    started_at, t0 = utc_now(), time.time()

    def outcome(status, metrics=None, reason=None):
        return Outcome(status, metrics, reason, started_at, utc_now(), round(time.time() - t0, 3))

    stale = Path(job.out) / METRICS_FILE
    if stale.is_file():  # a folder left by a killed run: only a metrics.json this call writes may count
        stale.unlink()
    try:
        extra = {} if job.method == "cnn" else {"method": job.method}
        metrics = run_fn(job.config, job.out, job.data_root, overwrite=True, echo=False, progress=False, **extra)
    except WeightsUnavailable as err:
        return outcome("skipped", reason=str(err))
    except MedtransferError as err:
        return outcome("failed", reason=str(err))
    except Exception as err:  # a bug in one run must not stop the study; the run's train.log has the traceback
        return outcome("failed", reason=f"{type(err).__name__}: {err}")
    if not (Path(job.out) / METRICS_FILE).is_file():
        return outcome("failed", reason=f"the run returned but {Path(job.out) / METRICS_FILE} is missing")
    if not job.keep_weights:
        (Path(job.out) / WEIGHTS_FILE).unlink(missing_ok=True)
    return outcome("done", metrics=metrics)


def _isolate(job: Job) -> None:
    """Give the run its share of the cores. (Each run seeds its own RNGs: see runs.train_run.)"""
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)


class LocalExecutor:
    """Sequential in this process, or ``workers`` processes sharing the cores (torch threads divided)."""

    def __init__(self, run_fn: RunFn | None = None, workers: int = 1):
        if workers < 1:
            raise MedtransferError(f"--workers must be at least 1, got {workers}")
        self.run_fn = run_fn or default_run_fn()
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def map(self, jobs: Iterable[Job]) -> Iterator[tuple[str, Outcome]]:
        jobs = list(jobs)
        if self.workers == 1:
            for job in jobs:
                yield job.run_id, run_one(job, self.run_fn)
            return
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // self.workers)
        if self._pool is None:  # spawn: a forked torch (OpenMP) can deadlock
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        futures = {self._pool.submit(run_one, _with_threads(job, threads), self.run_fn): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                yield job.run_id, future.result()
            except Exception as err:  # the worker process died (e.g. killed for memory)
                now = utc_now()
                yield job.run_id, Outcome("failed", None, f"worker process died: {type(err).__name__}: {err}",
                                          now, now, 0.0)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor:
    """Each run is a Ray task asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` (fractional) GPUs.

    ``address`` (or $RAY_ADDRESS) joins an existing cluster, whose nodes must see STUDY_DIR and
    the data root at the same paths; otherwise a local instance uses every core of this machine.
    """

    def __init__(self, run_fn: RunFn | None = None, address: str | None = None, cpus_per_run: float = 1.0,
                 gpus_per_run: float = 0.0):
        try:
            import ray
        except ImportError:
            raise MedtransferError("--executor ray needs Ray: pip install 'ray==2.*'") from None
        self.ray = ray
        self.run_fn = run_fn or default_run_fn()
        self.cpus_per_run, self.gpus_per_run = cpus_per_run, gpus_per_run
        address = address or os.environ.get("RAY_ADDRESS")
        self._started_here = not ray.is_initialized()
        if self._started_here:
            common = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING",
                      "configure_logging": True}
            if address:
                ray.init(address=address, **{k: v for k, v in common.items() if k != "include_dashboard"})
            else:
                ray.init(num_cpus=os.cpu_count(), **common)
        self._remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(run_one)
        self._pending: dict = {}

    def map(self, jobs: Iterable[Job]) -> Iterator[tuple[str, Outcome]]:
        threads = max(1, int(self.cpus_per_run))
        fn_ref = self.ray.put(self.run_fn)
        pending = self._pending = {self._remote.remote(_with_threads(job, threads), fn_ref): job for job in jobs}
        while pending:
            ready, _ = self.ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                yield job.run_id, self.ray.get(ready[0])
            except Exception as err:  # the task's worker died or could not start
                now = utc_now()
                yield job.run_id, Outcome("failed", None, f"ray task failed: {type(err).__name__}: "
                                          f"{str(err).strip().splitlines()[-1] if str(err).strip() else ''}",
                                          now, now, 0.0)

    def close(self) -> None:
        for ref in self._pending:  # an interrupted study must not leave tasks running on a shared cluster
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished or its worker is gone
                pass
        self._pending = {}
        if self._started_here and self.ray.is_initialized():
            self.ray.shutdown()


def _with_threads(job: Job, threads: int) -> Job:
    return dataclasses.replace(job, threads=threads)


def make_executor(kind: str, run_fn: RunFn | None = None, workers: int = 1, ray_address: str | None = None,
                  cpus_per_run: float = 1.0, gpus_per_run: float = 0.0):
    if kind == "local":
        return LocalExecutor(run_fn, workers)
    if kind == "ray":
        return RayExecutor(run_fn, ray_address, cpus_per_run, gpus_per_run)
    raise MedtransferError(f"--executor must be local or ray, got {kind!r}")
