"""``medtransfer study status STUDY_DIR``: what is done, what is left, and why runs failed.

Reads only STUDY_DIR (the spec copy and the store), so it is safe while a study runs. The store is
opened read-only and must be a study's store: an emptied (0-byte), truncated or table-less file is a
one-line error saying how to rebuild it, never "every run pending".
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..errors import ConfigError, MedtransferError
from ..kinds import RunStatus
from .grid import canonical_json, expand, runs_on_axis
from .schema import SPEC_FILE, STORE_FILE
from .spec import load_spec, overrides_from_text
from .store import Store

MAX_REASONS = 10


def _baseline_lines(plan, statuses: dict[str, str]) -> list[str]:
    """'baseline radiomics (done / planned): N=50 2/2, N=200 1/2' per baseline method of the plan."""
    per: dict[str, dict[str, list[int]]] = {}
    for r in plan.runs:
        if r.is_baseline:
            cell = per.setdefault(r.method, {}).setdefault(str(r.config.train.n_train), [0, 0])
            cell[0] += statuses.get(r.run_id) == RunStatus.DONE
            cell[1] += 1
    return [f"baseline {method} (done / planned): " + ", ".join(f"N={n} {d}/{p}" for n, (d, p) in cells.items())
            for method, cells in per.items()]


def _expand_as_run(spec_path: Path, current, rows):
    """The spec expanded as the last ``study run`` ran it: with the thread share it gave each run (--workers K,
    Ray) and the pack size it trained them in (--pack K), both part of the run ids and read back from the
    configs the current plan's rows recorded."""
    overrides = overrides_from_text(spec_path.read_text())
    spec = load_spec(spec_path, overrides)
    plan = expand(spec, origin=str(spec_path), pack=spec.resources.pack)
    if current is None or {r.run_id for r in plan.all_runs} & current[1]:
        return plan
    trains = [json.loads(r["config_json"]).get("train") or {} for r in rows if r["run_id"] in current[1]]
    threads = {t.get("threads") for t in trains} - {None}
    packs = {t.get("pack") for t in trains} - {None}
    if len(threads) > 1 or len(packs) > 1:
        return plan
    extra = [f"train.threads={t}" for t in threads]
    return expand(load_spec(spec_path, overrides + extra), origin=str(spec_path),
                  pack=packs.pop() if packs else spec.resources.pack)


def study_status(study_dir: str | Path) -> str:
    study_dir = Path(study_dir)
    spec_path, store_path = study_dir / SPEC_FILE, study_dir / STORE_FILE
    if not store_path.is_file():
        raise MedtransferError(f"{study_dir}: not a study folder ({STORE_FILE} not found; run `medtransfer study run` first)")
    store = Store(store_path, read_only=True)   # never creates a schema in, or migrates, the study's store
    statuses = store.statuses()
    rows = store.rows()
    lines = [f"study folder {study_dir}"]
    plan = None
    current = store.current_plan()
    if spec_path.is_file():
        try:
            plan = _expand_as_run(spec_path, current, rows)
        except ConfigError as err:
            lines.append(f"(cannot expand {spec_path}: {err})")
    if plan is not None:
        planned = current[1] if current else {r.run_id for r in plan.all_runs}
        counts = Counter(statuses.get(rid, RunStatus.PENDING) for rid in planned)
        lines.append(f"{len(planned)} runs: " + ", ".join(f"{counts.get(k, 0)} {k}"
                                                          for k in RunStatus))
        extra = len(set(statuses) - planned)
        if extra:
            lines.append(f"{extra} rows in the store belong to an earlier version of the spec")
        lines.append("per axis (done / planned):")
        for axis, values in plan.spec.grid.items():
            cells = []
            for value in values:
                key = canonical_json(value)
                runs = [r for r in runs_on_axis(plan.runs, axis) if canonical_json(r.axes[axis]) == key]
                done = sum(1 for r in runs if statuses.get(r.run_id) == RunStatus.DONE)
                cells.append(f"{value if not isinstance(value, (dict, list)) else key} {done}/{len(runs)}")
            lines.append(f"  {axis}: " + ", ".join(cells))
        lines.extend(_baseline_lines(plan, statuses))
    else:
        counts = Counter(statuses.values())
        lines.append(f"{len(statuses)} runs recorded: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    if current is not None:   # failures and compute of the current plan only
        rows = [r for r in rows if r["run_id"] in current[1]]
    for status in (RunStatus.FAILED, RunStatus.SKIPPED):
        reasons = Counter((r["reason"] or "no reason recorded").splitlines()[0] for r in rows if r["status"] == status)
        if not reasons:
            continue
        lines.append(f"{status} ({sum(reasons.values())}):")
        for reason, n in reasons.most_common(MAX_REASONS):
            lines.append(f"  {n} x {reason}")
        if len(reasons) > MAX_REASONS:
            lines.append(f"  ... and {len(reasons) - MAX_REASONS} other reasons")
    seconds = sum(r["seconds"] or 0 for r in rows if r["status"] == RunStatus.DONE)
    lines.append(f"compute in done runs: {seconds / 3600:.2f} h")
    return "\n".join(lines)
