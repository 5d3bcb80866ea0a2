"""``medtransfer study run``: validate, pretrain the sources, run the grid, resume where it stopped.

``run_study`` returns the study's summary and writes no report: the report is written by whoever
runs the study (the CLI's ``study run``), so this package never imports ``medtransfer.report``.

Crash safety comes from two facts: a run folder's ``metrics.json`` is written last (by
``train_run``), and a run's row is written ``done`` only after that file exists. So after a
``kill -9`` every ``done`` row has complete files; runs in flight simply have no row (or an
older one) and are redone with ``overwrite``; a run killed after its metrics.json was
written is adopted as done without training it again.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from ..config import hashed_view, load_yaml, resolve_data_root, written_config
from ..durations import format_duration
from ..errors import DiskFull, MedtransferError, SharedDataError
from ..kinds import Init, RunRole, RunStatus
from ..run_folder import RunFolder, write_text_atomic
from ..tracking import require_mlflow
from .disjoint import check_sources_disjoint
from .dryrun import describe_plan, estimate_time, runs_above_pool, runs_missing_weights, study_device
from .eta import EtaColumn, StudyEta
from .executors import (Executor, ExecutorOptions, Job, Outcome, RunFn, check_executor_options, make_executor,
                        pack_jobs, packs_on_this_host, parallel_runs, thread_share)
from .grid import Plan, PlannedRun, canonical_json, expand
from .lock import LOCK_FILE, study_lock
from .opened import OpenedSources
from .schema import SPEC_FILE, STORE_FILE
from .spec import get_dotted, load_spec, spec_text_with_overrides
from .store import Store
from .tracked import StudyTracker


@dataclass
class StudySummary:
    study_dir: Path | None
    total: int
    counts: dict[str, int] = field(default_factory=dict)   # done / failed / skipped / pending
    ran: int = 0                                           # runs executed by this call
    seconds: float = 0.0
    report: Path | None = None                             # set by the caller that wrote report.html
    text: str = ""                                         # the dry-run description, when dry_run

    def __str__(self) -> str:
        if self.text:
            return self.text
        parts = ", ".join(f"{self.counts.get(k, 0)} {k}" for k in RunStatus)
        line = f"{self.study_dir}: {self.total} runs: {parts} ({self.ran} run now in {self.seconds:.0f} s)"
        return line + (f"\nreport: {self.report}" if self.report else "")


def plan_study(spec_path: str | os.PathLike, overrides: list[str] | None = None, pack: int | None = None) -> Plan:
    """Load, check and expand a study spec (raises ConfigError before anything runs).

    ``pack``: the fused-pack size the grid runs will train in (None: the spec's ``resources.pack``);
    it is part of their run ids (see ``grid.expand``)."""
    spec = load_spec(spec_path, overrides)
    return expand(spec, origin=str(spec_path), pack=spec.resources.pack if pack is None else pack)


@dataclass(frozen=True)
class StudyOptions:
    """How to run a study (the spec says what to run). ``mlflow`` is a tracking URI or folder (None: no
    tracking; see ``study.tracked``). The last four are hooks for tests and embedders:
    ``run_fn`` replaces the real run, ``probe`` times one step for the dry-run estimate, ``check_data``
    opens every dataset first (default: on with the real run function only), ``console`` receives the
    progress and per-run lines. No option writes the report: the caller does (``report.write_report``)."""
    data_root: str | os.PathLike | None = None
    executor: str = "local"
    workers: int = 1
    ray_address: str | None = None
    retry_failed: bool = False
    dry_run: bool = False
    overrides: tuple[str, ...] = ()
    mlflow: str | None = None
    pack: int | None = None        # None: the spec's resources.pack
    run_fn: RunFn | None = None
    probe: bool = True
    check_data: bool | None = None
    console: Console | None = None

    def executor_options(self, plan: Plan) -> ExecutorOptions:
        res = plan.spec.resources
        return ExecutorOptions(run_fn=self.run_fn, workers=self.workers, ray_address=self.ray_address,
                               cpus_per_run=res.cpus_per_run, gpus_per_run=res.gpus_per_run)


def run_study(spec_path: str | os.PathLike, out: str | os.PathLike | None = None,
              options: StudyOptions = StudyOptions()) -> StudySummary:
    """Run (or resume) every run of a study; per-run failures are recorded, never raised, except a full
    disk (DiskFull): every later run would fail the same way, so the study stops at once, records nothing
    for the run it hit, and resumes from there once space is freed.

    Before the first run, every dataset the remaining runs need is opened (labels only), so a
    missing file stops the study at once, naming it. STUDY_DIR is locked for the whole call:
    a second writer is refused at once, naming this process.
    """
    opts = options
    console = opts.console or Console(stderr=True)
    if opts.pack is not None and opts.pack < 1:
        raise MedtransferError(f"--pack must be at least 1, got {opts.pack}")
    plan = plan_study(spec_path, list(opts.overrides), pack=_pack_option(opts))
    check_executor_options(opts.executor, opts.executor_options(plan))
    plan = _with_thread_share(plan, spec_path, opts)
    root = Path(opts.data_root).expanduser().resolve() if opts.data_root else resolve_data_root(None)
    if opts.dry_run:
        return _dry_run(plan, out, root, opts.executor, opts.workers, opts.probe)
    if out is None:
        raise MedtransferError("study run: --out STUDY_DIR is required (except with --dry-run)")
    if opts.mlflow:
        require_mlflow()   # before the lock, the data check and any run
    study_dir = Path(out).expanduser().resolve()
    check_data = opts.run_fn is None if opts.check_data is None else opts.check_data
    fresh = not study_dir.exists()
    opened = OpenedSources(root)
    with study_lock(study_dir, log=lambda line: console.print(line, markup=False, highlight=False)):
        if check_data:
            try:
                known = Store(study_dir / STORE_FILE).statuses() if (study_dir / STORE_FILE).is_file() else {}
                _check_data(_todo(plan.all_runs, known, opts.retry_failed, study_dir), opened)
                for note in check_sources_disjoint(plan, opened):
                    console.print(f"note: {note}", markup=False, highlight=False)
            except MedtransferError:
                if fresh:   # a missing dataset leaves nothing behind
                    _remove_empty_study_dir(study_dir)
                raise
        return _run_locked(plan, Path(spec_path), study_dir, opened, opts, console)


def _remove_empty_study_dir(study_dir: Path) -> None:
    """Undo the folder the lock created, when nothing else was written into it."""
    if {p.name for p in study_dir.iterdir()} <= {LOCK_FILE}:
        (study_dir / LOCK_FILE).unlink(missing_ok=True)
        study_dir.rmdir()


def _with_thread_share(plan: Plan, spec_path, opts: StudyOptions) -> Plan:
    """Runs sharing the cores (--workers K, Ray) get ``train.threads`` set to their share, unless the spec sets it.

    CPU results depend on the thread count, so it must be part of the config (and so of the run id):
    a study resumed with another --workers then runs new ids instead of mixing two kinds of result.
    """
    share = thread_share(opts.executor, opts.executor_options(plan))
    if share is None or get_dotted(plan.spec.base, "train.threads") is not None:
        return plan
    return plan_study(spec_path, list(opts.overrides) + [f"train.threads={share}"], pack=_pack_option(opts))


def _run_locked(plan: Plan, spec_path: Path, study_dir: Path, opened: OpenedSources, opts: StudyOptions,
                console: Console) -> StudySummary:
    root = opened.data_root
    retry_failed = opts.retry_failed
    _write_spec_copy(spec_path, study_dir, list(opts.overrides), console)
    store = Store(study_dir / STORE_FILE)
    plan_hash = store.record_plan([r.run_id for r in plan.all_runs])   # the report and status count this plan's rows
    _adopt_finished(plan, study_dir, store)
    tracker = _open_tracker(opts.mlflow, plan, study_dir, plan_hash, console)
    started = datetime.now(timezone.utc)
    _warn_cpu_pack(plan, opts, console)
    ex = make_executor(opts.executor, opts.executor_options(plan))
    ran = 0
    try:
        with _study_progress(console) as progress:
            statuses = store.statuses()
            settled = sum(1 for r in plan.all_runs if not _needs_run(r, statuses, retry_failed, study_dir))
            eta = _probe_eta(plan, _todo(plan.all_runs, statuses, retry_failed, study_dir), opened, opts, console)
            opened.clear()
            bar = progress.add_task("study", total=len(plan.all_runs), completed=settled, eta=eta)
            recorder = _Recorder(plan, store, progress, bar, eta, tracker)
            ran += _execute(ex, _todo(plan.sources, statuses, retry_failed, study_dir), study_dir, root, recorder)
            statuses = store.statuses()
            grid_todo = []
            for run in _todo(plan.runs, statuses, retry_failed, study_dir):
                blocked = _blocked_by_source(run, plan, store, statuses)
                if blocked:
                    recorder.blocked(run, blocked)
                else:
                    grid_todo.append(run)
            first, rest = _feature_warmups(grid_todo)
            ran += _execute(ex, first, study_dir, root, recorder)
            ran += _execute(ex, rest, study_dir, root, recorder, pack=_pack_size(plan, opts))
    finally:
        ex.close()
    if tracker:   # runs finished by earlier calls (resume, adopted, a first call without --mlflow)
        tracker.catch_up(plan, store.rows())
    return _summarise(plan, store, study_dir, ran, (datetime.now(timezone.utc) - started).total_seconds())


def _dry_run(plan: Plan, out, root: Path, executor: str, workers: int, probe: bool) -> StudySummary:
    statuses = None
    if out is not None and (Path(out) / STORE_FILE).is_file():
        statuses = Store(Path(out) / STORE_FILE, read_only=True).statuses()   # a dry run writes nothing
    parallel = _parallel_runs(plan, executor, workers)
    opened = OpenedSources(root)
    leaks = _dry_run_leak_check(plan, opened)
    estimate = estimate_time(plan, root, opened=opened) if probe else None
    warnings = runs_above_pool(plan, opened) + runs_missing_weights(plan, statuses) + leaks
    text = describe_plan(plan, statuses, estimate, parallel, warnings)
    return StudySummary(study_dir=Path(out) if out else None, total=len(plan.all_runs), text=text)


def _dry_run_leak_check(plan: Plan, opened: OpenedSources) -> list[str]:
    """The real run's source/target leak check, so a dry run refuses what the run would refuse; when the data
    cannot be read here (a dry run must work without it) the text says the check was not done."""
    if not plan.sources:
        return []
    try:
        notes = check_sources_disjoint(plan, opened)
    except SharedDataError:
        raise
    except MedtransferError as err:
        return [f"warning: sources not checked for shared patients / images: data not readable here ({err})"]
    return [f"note: {n}" for n in notes] + ["sources checked: no shared patients or images with their targets "
                                            "(allow_overlap sources apart)"]


def _check_data(runs: list[PlannedRun], opened: OpenedSources) -> None:
    """Open each distinct dataset once (labels and file list, no decoding); raise naming every gap at once."""
    seen, problems, first = set(), [], None
    for run in runs:
        cfg = run.config
        key = OpenedSources.key(cfg)
        if key in seen:
            continue
        seen.add(key)
        try:
            opened.get(cfg)
        except MedtransferError as err:
            who = f"source {run.source}" if run.role is RunRole.SOURCE else "grid"
            problems.append(f"{who} data ({run.task}): {err}")
            first = first or err
    if problems:   # a user placing files offline wants the whole list, not one file per attempt
        raise type(first)("; ".join(problems))


def _write_spec_copy(spec_path: Path, study_dir: Path, overrides, console: Console) -> None:
    text = spec_text_with_overrides(spec_path, overrides)
    target = study_dir / SPEC_FILE
    if target.is_file() and target.read_text() != text:
        console.print(f"note: {target} differs from {spec_path}; runs of the earlier spec stay in the store "
                      "(a changed config is a new run id)", markup=False, highlight=False)
    write_text_atomic(target, text)


def _study_progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("elapsed"), TimeElapsedColumn(), EtaColumn(), console=console, transient=False)


def _parallel_runs(plan: Plan, executor: str, workers: int) -> int:
    """How many runs the executor trains at once, as the executor itself says (``ExecutorKind.parallel_runs``)."""
    res = plan.spec.resources
    return parallel_runs(executor, ExecutorOptions(workers=workers, cpus_per_run=res.cpus_per_run,
                                                   gpus_per_run=res.gpus_per_run))


def _probe_eta(plan: Plan, todo: list[PlannedRun], opened: OpenedSources, opts: StudyOptions,
               console: Console) -> StudyEta | None:
    """Price the pending runs with the dry-run probe (about 10 s), so the ETA shows from the start."""
    if not todo or not opts.probe or opts.run_fn is not None:
        return None
    estimate = estimate_time(plan, opened.data_root, budget_s=PROBE_BUDGET_LIVE_S, opened=opened, runs=todo)
    eta = StudyEta(estimate.per_run, [r.run_id for r in todo], _parallel_runs(plan, opts.executor, opts.workers))
    left = eta.seconds_left()
    if left is not None:
        console.print(f"{len(todo)} run(s) to do; the timing probe estimates {format_duration(left)} "
                      f"({estimate.device}; refined as runs finish)", markup=False, highlight=False)
    return eta


PROBE_BUDGET_LIVE_S = 10.0   # the live ETA's probe: half the dry run's, a study should start promptly


def _needs_run(run: PlannedRun, statuses: dict[str, str], retry_failed: bool, study_dir: Path) -> bool:
    status = statuses.get(run.run_id)
    if status == RunStatus.DONE:
        # a source whose weights were deleted must be pretrained again: grid runs load them
        return run.role is RunRole.SOURCE and not RunFolder(study_dir / run.run_dir).has_weights
    if status == RunStatus.FAILED:
        return retry_failed
    return True  # never run, or skipped (the missing weights file may have been placed since)


def _todo(runs: list[PlannedRun], statuses, retry_failed, study_dir) -> list[PlannedRun]:
    return [r for r in runs if _needs_run(r, statuses, retry_failed, study_dir)]


def _adopt_finished(plan: Plan, study_dir: Path, store: Store) -> None:
    """A run killed after writing metrics.json but before its row: record it done, do not retrain."""
    statuses = store.statuses()
    for run in plan.all_runs:
        folder = RunFolder(study_dir / run.run_dir)
        if statuses.get(run.run_id) == RunStatus.DONE or not folder.is_finished:
            continue
        if not _folder_matches(run, folder):
            continue
        try:
            metrics = folder.read_metrics()
        except MedtransferError:   # unreadable: the run is redone
            continue
        finished = datetime.fromtimestamp(folder.metrics_path.stat().st_mtime, timezone.utc)
        seconds = float(metrics.seconds or 0.0)
        start = datetime.fromtimestamp(finished.timestamp() - seconds, timezone.utc)
        store.record_done(run, metrics, start.isoformat(timespec="milliseconds"),
                          finished.isoformat(timespec="milliseconds"), seconds)


def _folder_matches(run: PlannedRun, folder: RunFolder) -> bool:
    """Grid folders are named by run id; a source folder is by name, so check its config is this one
    (as hashed: a config.yaml written before a key was added still matches, unless its runs trained on other
    data, as a source drawn before data.subset_by existed)."""
    if run.role is RunRole.GRID:
        return True
    try:
        written = written_config(load_yaml(folder.config_path), origin=str(folder.config_path))
    except MedtransferError:
        return False
    return hashed_view(written) == hashed_view(run.config)


def _feature_warmups(runs: list[PlannedRun]) -> tuple[list[PlannedRun], list[PlannedRun]]:
    """One baseline run per feature set goes first, on its own: the others then reuse its cached
    features instead of several workers extracting the same features at once."""
    first: dict[str, PlannedRun] = {}
    for run in runs:
        if run.is_baseline:
            cfg = run.config
            key = canonical_json([cfg.data.model_dump(mode="json"), cfg.task.model_dump(mode="json"),
                                  cfg.radiomics.model_dump(mode="json")])
            first.setdefault(key, run)
    chosen = {r.run_id for r in first.values()}
    return list(first.values()), [r for r in runs if r.run_id not in chosen]


def _blocked_by_source(run: PlannedRun, plan: Plan, store: Store, statuses: dict[str, str]) -> str | None:
    if run.source is None:
        return None
    status = statuses.get(run.source)
    if status == RunStatus.DONE:
        return None
    src = plan.source_by_id()[run.source]
    reason = next((r["reason"] for r in store.rows(RunRole.SOURCE) if r["run_id"] == run.source), None)
    return f"source {src.source} {status or 'did not run'}: {reason or 'no reason recorded'}"


def _job(run: PlannedRun, study_dir: Path, data_root: Path, plan_sources: dict[str, PlannedRun],
         keep_weights: bool) -> Job:
    cfg = run.config
    if cfg.model.init.is_source:
        src = plan_sources[run.source]
        cfg = cfg.model_copy(deep=True)
        cfg.model.init = Init.checkpoint(RunFolder(study_dir / src.run_dir).weights_path)
    return Job(run.run_id, cfg, study_dir / run.run_dir, data_root,
               keep_weights=keep_weights or run.role is RunRole.SOURCE, method=run.method)


def _open_tracker(target: str | None, plan: Plan, study_dir: Path, plan_hash: str, console: Console):
    """The study's MLflow experiment (None without --mlflow); a bad URI stops the call before any run."""
    if not target:
        return None
    return StudyTracker(target, plan, study_dir, plan_hash, console)


def _pack_option(opts: StudyOptions) -> int | None:
    """The pack size to plan with: --pack, else None (the spec's resources.pack); 1 with a replaced run
    function, which trains each run alone (a pack trains for real)."""
    return 1 if opts.run_fn is not None else opts.pack


def _pack_size(plan: Plan, opts: StudyOptions) -> int:
    """--pack, else the spec's resources.pack; 1 with a replaced run function (a pack trains for real)."""
    pack = _pack_option(opts)
    return pack if pack is not None else plan.spec.resources.pack


def _warn_cpu_pack(plan: Plan, opts: StudyOptions, console: Console) -> None:
    """Packing pays where a small batch leaves the device idle (a GPU); on CPU cores a fused pack is slower."""
    if _pack_size(plan, opts) <= 1 or not packs_on_this_host(opts.executor):   # e.g. Ray workers may have GPUs this head lacks
        return
    try:
        on_cpu = study_device(plan).type == "cpu"
    except MedtransferError:   # train.device names a device this machine lacks: the runs will say so
        return
    if on_cpu:
        console.print(f"note: packs of {_pack_size(plan, opts)} on a CPU train more slowly than their runs one by one "
                      "(fused convolutions are slower on CPU cores, measured in the project's "
                      "benchmarks/README.md): packing is for GPUs", markup=False, highlight=False)


@dataclass
class _Recorder:
    """Where each run's outcome goes as it comes back (the driver alone writes): the store, then the MLflow
    tracker (if any), the ETA, the progress bar and one console line."""
    plan: Plan
    store: Store
    progress: Progress
    bar: TaskID
    eta: StudyEta | None = None
    tracker: StudyTracker | None = None

    def outcome(self, run: PlannedRun, outcome: Outcome) -> None:
        """Record what the executor returned for ``run``."""
        store = self.store
        if outcome.status is RunStatus.DONE:
            store.record_done(run, outcome.metrics, outcome.started_at, outcome.finished_at, outcome.seconds)
        elif outcome.status is RunStatus.SKIPPED:
            store.record_skipped(run, outcome.reason, outcome.started_at, outcome.finished_at, outcome.seconds)
        else:
            store.record_failed(run, outcome.reason, outcome.started_at, outcome.finished_at, outcome.seconds)
        if self.tracker:
            self.tracker.record(run, outcome.status, outcome.reason, outcome.metrics, outcome.started_at,
                                outcome.finished_at)
        if self.eta is not None:
            self.eta.finished(run.run_id, outcome.seconds if outcome.status is RunStatus.DONE else 0.0)
        self._shown(run, outcome)

    def blocked(self, run: PlannedRun, reason: str) -> None:
        """Record a grid run skipped without running: the source it starts from is not done."""
        self.store.record_skipped(run, reason)
        if self.eta is not None:
            self.eta.finished(run.run_id, 0.0)
        if self.tracker:
            self.tracker.record(run, RunStatus.SKIPPED, reason)
        self._shown(run, Outcome(RunStatus.SKIPPED, None, reason, "", "", 0.0))

    def _shown(self, run: PlannedRun, outcome: Outcome) -> None:
        self.progress.advance(self.bar)
        _print_line(self.progress.console, run, outcome, self.plan)


def _execute(ex: Executor, runs: list[PlannedRun], study_dir: Path, data_root: Path, recorder: _Recorder,
             pack: int = 1) -> int:
    """Hand the runs to the executor (CNN grid runs in packs of up to ``pack``); record each outcome as it
    comes back. A full disk stops the study at once, with nothing recorded for the run it hit."""
    if not runs:
        return 0
    plan = recorder.plan
    by_id = {r.run_id: r for r in runs}
    sources = plan.source_by_id()
    jobs = pack_jobs([_job(r, study_dir, data_root, sources, plan.spec.keep_weights) for r in runs], pack)
    count = 0
    for run_id, outcome in ex.map(jobs):
        if outcome.halt:   # a full disk: stop now, record nothing for the run, resume once space is freed
            raise DiskFull(outcome.reason)
        recorder.outcome(by_id[run_id], outcome)
        count += 1
    return count


def _print_line(console: Console, run: PlannedRun, outcome: Outcome, plan: Plan) -> None:
    """One line per finished run; task and arch only where the grid varies them (sources: always)."""
    cfg = run.config
    shown = [run.task] if run.role is RunRole.SOURCE or len({r.task for r in plan.runs}) > 1 else []
    if not run.is_baseline and (run.role is RunRole.SOURCE
                                or len({r.config.model.arch for r in plan.runs if not r.is_baseline}) > 1):
        shown.append(cfg.model.arch)
    what = " ".join(shown + [run.recipe, f"N={cfg.train.n_train}", f"seed={cfg.train.seed}"])
    if outcome.status is RunStatus.DONE:
        auc = outcome.metrics.auroc("test") if outcome.metrics else None
        result = f"test AUROC {auc:.3f}" if auc is not None else "test AUROC undefined"
        line = f"done    {what}  {result}  ({outcome.seconds:.0f} s)"
    else:
        reason = (outcome.reason or "").splitlines()[0] if outcome.reason else ""
        line = f"{outcome.status:7} {what}  {reason[:200]}"
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def _summarise(plan: Plan, store: Store, study_dir: Path, ran: int, seconds: float) -> StudySummary:
    statuses = store.statuses()
    counts = {status.value: 0 for status in RunStatus}
    for run in plan.all_runs:
        counts[statuses.get(run.run_id, RunStatus.PENDING)] += 1
    return StudySummary(study_dir=study_dir, total=len(plan.all_runs), counts=counts, ran=ran, seconds=seconds)
