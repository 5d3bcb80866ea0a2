"""Where runs execute: in this process, in K local processes, or as Ray tasks.

Every executor takes the same jobs and yields ``(run_id, Outcome)`` as runs finish; the
driver alone writes the store. A run's own failure is an Outcome, never an exception, so
one bad run cannot stop the study. ``run_fn`` is a parameter (default: ``run_by_method``,
which sends CNN runs to ``medtransfer.runs.cnn.train_run`` and radiomics baseline runs to
``medtransfer.radiomics.radiomics_run``) so tests and other run kinds can plug in. A job of
a method other than 'cnn' calls ``run_fn`` with ``method=...`` as well, so a run function
that serves a study with baselines must accept that keyword.

Executors register themselves by name (``@register_executor("local")``); the CLI's
``--executor`` choices and ``study.execute``'s checks come from that registry, so a new executor
(a SLURM array, say) is one class here and nothing else.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

from ..config import RunConfig
from ..errors import MedtransferError, WeightsUnavailable, as_disk_full
from ..kinds import RunMethod, RunStatus, Strategy
from ..parallel import orphan_proof_pool
from ..run_folder import RunFolder, RunMetrics
from .store import utc_now

RunFn = Callable[..., RunMetrics]


def default_run_fn() -> RunFn:
    return run_by_method


def run_by_method(cfg: RunConfig, out: Path, data_root: Path, *, method: RunMethod = RunMethod.CNN,
                  **kw) -> RunMetrics:
    """The real run of a study job: train a CNN, or fit the radiomics baseline."""
    # The run modules are imported when a job runs: they pull in torch, scikit-learn and pyradiomics
    # (measured: 6.9 s against 0.35 s for `medtransfer --help`, which imports this module for its
    # --executor choices). run_pack does the same.
    match RunMethod(method):
        case RunMethod.RADIOMICS:
            from ..radiomics.baseline_run import radiomics_run

            return radiomics_run(cfg, out, data_root, **kw)
        case RunMethod.CNN:
            from ..runs.cnn import train_run

            return train_run(cfg, out, data_root, **kw)
    raise MedtransferError(f"unknown run method {method!r} (known: {', '.join(RunMethod)})")


@dataclass(frozen=True)
class Job:
    run_id: str
    config: RunConfig        # model.init resolved (source:NAME -> checkpoint:<abs path>)
    out: Path                # absolute run folder
    data_root: Path
    keep_weights: bool = True   # False: delete model.safetensors once metrics.json is written
    method: RunMethod = RunMethod.CNN   # passed to run_fn as method= when not CNN


@dataclass(frozen=True)
class Outcome:
    status: RunStatus        # done | failed | skipped
    metrics: RunMetrics | None
    reason: str | None
    started_at: str
    finished_at: str
    seconds: float
    halt: bool = False       # the study must stop here (the disk is full): nothing is recorded for this run


def run_one(job: Job, run_fn: RunFn) -> Outcome:
    """Run one job and turn every ordinary failure into an Outcome (interrupts still propagate)."""
    started_at, t0 = utc_now(), time.time()
    RunFolder(job.out).metrics_path.unlink(missing_ok=True)  # a killed run's leftover: only a metrics.json this call writes counts
    error = None
    try:
        extra = {} if job.method is RunMethod.CNN else {"method": job.method}
        run_fn(job.config, job.out, job.data_root, overwrite=True, echo=False, progress=False, **extra)
    except Exception as err:  # a bug in one run must not stop the study; the run's train.log has the traceback
        error = err
    return _settle(job, error, started_at, round(time.time() - t0, 3))


def _settle(job: Job, error: BaseException | None, started_at: str, seconds: float) -> Outcome:
    """The Outcome of a job that ended with ``error`` (None: it returned): skipped when its weights are
    missing, failed with the reason, else done with the metrics its folder holds (the folder is the truth,
    what a resumed study adopts, not a return value)."""
    def outcome(status, metrics=None, reason=None, halt=False):
        return Outcome(status, metrics, reason, started_at, utc_now(), seconds, halt)

    full = None if error is None else as_disk_full(error, job.out)
    if full is not None:   # not this run's fault: every later run would fail the same way
        return outcome(RunStatus.FAILED, reason=str(full), halt=True)
    if isinstance(error, WeightsUnavailable):
        return outcome(RunStatus.SKIPPED, reason=str(error))
    if isinstance(error, MedtransferError):
        return outcome(RunStatus.FAILED, reason=str(error))
    if error is not None:
        return outcome(RunStatus.FAILED, reason=f"{type(error).__name__}: {error}")
    folder = RunFolder(job.out)
    if not folder.is_finished:
        return outcome(RunStatus.FAILED, reason=f"the run returned but {folder.metrics_path} is missing")
    try:
        metrics = folder.read_metrics()
    except MedtransferError as err:
        return outcome(RunStatus.FAILED, reason=str(err))
    if not job.keep_weights:
        folder.remove_weights()
    return outcome(RunStatus.DONE, metrics=metrics)


@dataclass(frozen=True)
class PackedJob:
    """CNN grid jobs trained together in one process (``medtransfer.runs.packs.train_pack``): one fused model
    where their steps line up, one at a time where not. Each still writes its own run folder."""
    jobs: tuple[Job, ...]

    @property
    def run_id(self) -> str:   # for logs: the pack is named after its first run
        return self.jobs[0].run_id


# RunConfig keys whose values must agree for runs to share a pack: the same images in the same
# batch shapes every step, and the same layers training in every round (train.packed).
PACK_KEYS = ("task", "data", "image_size", ("model", "arch"), ("train", "n_train"), ("train", "batch_size"),
             ("train", "epochs"), ("train", "min_steps"), ("train", "steps"), ("train", "strategy"),
             ("train", "gradual_epochs"), ("train", "device"), ("train", "threads"))


def job_pack_key(job: Job) -> str | None:
    """Jobs with the same key may share a pack; None: this job always runs alone (not a CNN run, or a probe,
    which takes no optimiser step to fuse)."""
    if job.method is not RunMethod.CNN or job.config.train.strategy == Strategy.PROBE:
        return None
    dumped = job.config.model_dump(mode="json")
    parts = [dumped[k] if isinstance(k, str) else dumped[k[0]][k[1]] for k in PACK_KEYS]
    return json.dumps(parts, sort_keys=True, default=str)


def pack_jobs(jobs: list[Job], size: int) -> list[Job | PackedJob]:
    """Group CNN jobs with equal ``job_pack_key`` into packs of up to ``size``, in the order first seen; the
    rest stay single. ``size`` 1 changes nothing."""
    if size <= 1:
        return list(jobs)
    groups: dict[str, list[Job]] = {}
    order: list[tuple[str | None, Job | None]] = []
    for job in jobs:
        key = job_pack_key(job)
        if key is None:
            order.append((None, job))
            continue
        if key not in groups:
            groups[key] = []
            order.append((key, None))
        groups[key].append(job)
    out: list[Job | PackedJob] = []
    for key, job in order:
        if key is None:
            out.append(job)
            continue
        members = groups[key]
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            out.append(chunk[0] if len(chunk) == 1 else PackedJob(tuple(chunk)))
    return out


def run_pack(pack: PackedJob) -> list[tuple[str, Outcome]]:
    """Train a pack; per member the Outcome ``run_one`` would give. The pack's wall time is shared out
    evenly as each member's seconds (the cost a packed run really had)."""
    from ..runs.packs import train_pack

    started_at, t0 = utc_now(), time.time()
    for job in pack.jobs:
        RunFolder(job.out).metrics_path.unlink(missing_ok=True)
    try:
        results = train_pack([j.config for j in pack.jobs], [j.out for j in pack.jobs], pack.jobs[0].data_root)
    except Exception as err:   # the pack as a whole could not start (e.g. out of memory building it)
        results = [err] * len(pack.jobs)
    seconds = round((time.time() - t0) / len(pack.jobs), 3)
    return [(job.run_id, _settle(job, result if isinstance(result, BaseException) else None, started_at, seconds))
            for job, result in zip(pack.jobs, results, strict=True)]


def run_job(job: Job | PackedJob, run_fn: RunFn) -> list[tuple[str, Outcome]]:
    """``run_one`` for a job, ``run_pack`` for a pack: (run_id, Outcome) per run."""
    if isinstance(job, PackedJob):
        return run_pack(job)
    return [(job.run_id, run_one(job, run_fn))]


def _run_ids(job: Job | PackedJob) -> list[str]:
    return [j.run_id for j in job.jobs] if isinstance(job, PackedJob) else [job.run_id]


class Executor(Protocol):
    """Runs jobs somewhere and yields ``(run_id, Outcome)`` as each finishes; ``close`` stops what is left."""

    def map(self, jobs: Iterable[Job]) -> Iterator[tuple[str, Outcome]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ExecutorOptions:
    """Everything an executor may be built from; each uses the fields it needs and checks them."""
    run_fn: RunFn | None = None
    workers: int = 1
    ray_address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0


class ExecutorKind:
    """What the study asks of an executor class besides running jobs, so a new executor is one class here:
    which flags it takes, the threads each run gets, how many runs it runs at once (for the dry run and the
    ETA), and whether this host's device tells where its runs train (where packing is priced). The
    defaults are a sequential executor on this host that takes neither --workers nor --ray-address;
    subclasses override what differs."""

    name = ""
    packs_on_this_host = True     # False: runs train elsewhere (a cluster), so this host's device says nothing

    @classmethod
    def from_options(cls, options: ExecutorOptions) -> Executor:
        raise NotImplementedError

    @classmethod
    def check_options(cls, options: ExecutorOptions) -> None:
        """Refuse a flag this executor would silently ignore (the flags of the others, by default)."""
        if options.workers != 1:
            raise MedtransferError(f"--workers applies to --executor local; {cls.name} sizes runs by "
                                   "resources.cpus_per_run")
        if options.ray_address:
            raise MedtransferError("--ray-address needs --executor ray")

    @classmethod
    def thread_share(cls, options: ExecutorOptions) -> int | None:
        """CPU threads of each run when runs share a machine; None: torch's default (one run at a time)."""
        return None

    @classmethod
    def parallel_runs(cls, options: ExecutorOptions) -> int:
        """How many runs train at once (what the dry run and the ETA divide the work by)."""
        return 1


EXECUTORS: dict[str, type[ExecutorKind]] = {}


def register_executor(name: str):
    """Class decorator: registers an ``ExecutorKind`` subclass under ``name`` (a ``--executor`` choice)."""
    def decorator(cls):
        cls.name = name
        EXECUTORS[name] = cls
        return cls
    return decorator


def executor_names() -> list[str]:
    return list(EXECUTORS)


def executor_kind(kind: str) -> type[ExecutorKind]:
    """The registered executor class named ``kind``; a one-line error listing the choices otherwise."""
    if kind not in EXECUTORS:
        names = list(EXECUTORS)
        raise MedtransferError(f"--executor must be {', '.join(names[:-1])} or {names[-1]}, got {kind!r}")
    return EXECUTORS[kind]


def check_executor_options(kind: str, options: ExecutorOptions) -> None:
    """Refuse a combination of flags that one executor would silently ignore (before anything runs)."""
    cls = executor_kind(kind)
    if options.workers < 1:
        raise MedtransferError(f"--workers must be at least 1, got {options.workers}")
    cls.check_options(options)


def thread_share(kind: str, options: ExecutorOptions) -> int | None:
    """The CPU threads each run gets when runs share the machine (None: one run at a time, torch's default)."""
    return executor_kind(kind).thread_share(options)


def parallel_runs(kind: str, options: ExecutorOptions) -> int:
    """How many runs the executor trains at once (the dry run and the ETA divide the work by it)."""
    return executor_kind(kind).parallel_runs(options)


def packs_on_this_host(kind: str) -> bool:
    """Whether this host's device is where the executor's runs train (what the CPU-pack note is about)."""
    return executor_kind(kind).packs_on_this_host


def make_executor(kind: str, options: ExecutorOptions) -> Executor:
    check_executor_options(kind, options)
    return EXECUTORS[kind].from_options(options)


@register_executor("local")
class LocalExecutor(ExecutorKind):
    """Sequential in this process, or ``workers`` processes sharing the cores (each run's config fixes its
    threads: ``study.execute`` sets ``train.threads`` to the share, so the share is part of the run id)."""

    @classmethod
    def check_options(cls, options: ExecutorOptions) -> None:
        if options.ray_address:
            raise MedtransferError("--ray-address needs --executor ray")

    @classmethod
    def thread_share(cls, options: ExecutorOptions) -> int | None:
        return max(1, (os.cpu_count() or 1) // options.workers) if options.workers > 1 else None

    @classmethod
    def parallel_runs(cls, options: ExecutorOptions) -> int:
        return options.workers

    @classmethod
    def from_options(cls, options: ExecutorOptions) -> "LocalExecutor":
        return cls(options.run_fn, options.workers)

    def __init__(self, run_fn: RunFn | None = None, workers: int = 1):
        if workers < 1:
            raise MedtransferError(f"--workers must be at least 1, got {workers}")
        self.run_fn = run_fn or default_run_fn()
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def map(self, jobs: Iterable[Job | PackedJob]) -> Iterator[tuple[str, Outcome]]:
        jobs = list(jobs)
        if self.workers == 1:
            for job in jobs:
                yield from run_job(job, self.run_fn)
            return
        if self._pool is None:  # spawn: a forked torch (OpenMP) can deadlock; workers die with the driver
            self._pool = orphan_proof_pool(self.workers, mp_context=multiprocessing.get_context("spawn"))
        futures = {self._pool.submit(run_job, job, self.run_fn): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                results = future.result()
            except Exception as err:  # the worker process died (e.g. killed for memory)
                now = utc_now()
                results = [(run_id, Outcome(RunStatus.FAILED, None, f"worker process died: {type(err).__name__}: "
                                            f"{err}", now, now, 0.0)) for run_id in _run_ids(job)]
            yield from results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


@register_executor("ray")
class RayExecutor(ExecutorKind):
    """Each run is a Ray task asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` (fractional) GPUs.

    ``address`` (or $RAY_ADDRESS) joins an existing cluster, whose nodes must see STUDY_DIR and
    the data root at the same paths; otherwise a local instance uses every core of this machine.
    """

    packs_on_this_host = False   # Ray workers may have GPUs this head lacks

    @classmethod
    def check_options(cls, options: ExecutorOptions) -> None:
        if options.workers != 1:
            raise MedtransferError("--workers applies to --executor local; ray sizes runs by resources.cpus_per_run")

    @classmethod
    def thread_share(cls, options: ExecutorOptions) -> int | None:
        return max(1, int(options.cpus_per_run))

    @classmethod
    def parallel_runs(cls, options: ExecutorOptions) -> int:
        return max(1, int((os.cpu_count() or 1) // options.cpus_per_run))

    @classmethod
    def from_options(cls, options: ExecutorOptions) -> "RayExecutor":
        return cls(options.run_fn, options.ray_address, options.cpus_per_run, options.gpus_per_run)

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
        self._remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(run_job)
        self._pending: dict = {}

    def map(self, jobs: Iterable[Job | PackedJob]) -> Iterator[tuple[str, Outcome]]:
        fn_ref = self.ray.put(self.run_fn)
        pending = self._pending = {self._remote.remote(job, fn_ref): job for job in jobs}
        while pending:
            ready, _ = self.ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                results = self.ray.get(ready[0])
            except Exception as err:  # the task's worker died or could not start
                now = utc_now()
                why = str(err).strip().splitlines()[-1] if str(err).strip() else ""
                results = [(run_id, Outcome(RunStatus.FAILED, None, f"ray task failed: {type(err).__name__}: {why}",
                                            now, now, 0.0)) for run_id in _run_ids(job)]
            yield from results

    def close(self) -> None:
        for ref in self._pending:  # an interrupted study must not leave tasks running on a shared cluster
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished or its worker is gone
                pass
        self._pending = {}
        if self._started_here and self.ray.is_initialized():
            self.ray.shutdown()




