"""Issue 21: a source is what its config says (one STUDY_DIR, several specs), and a full disk stops a study.

Synthetic 24-px PNGs in tmp_path keep both fast and independent of ../shared/data.
"""
import hashlib
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from medtransfer.cli import main
from medtransfer.study import StudyOptions, run_study
from synthetic import write_labelled_pngs

DATA = {"source": "csv", "path": "labels.csv", "image_column": "path", "patient_column": "patient"}
TASK = {"kind": "binary", "label_column": "finding"}
TRAIN = {"epochs": 1, "min_steps": 0, "steps": 2, "batch_size": 16, "lr_policy": "constant", "augment": False,
         "threads": 1}


def _spec(folder: Path, name: str, source_lr: float | None, seeds: list[int]) -> Path:
    spec = {"base": {"data": DATA, "task": TASK, "image_size": 24, "model": {"arch": "resnet18", "init": "scratch"},
                     "train": TRAIN},
            "grid": {"train.seed": seeds}}
    if source_lr is not None:
        spec["sources"] = {"src": {"allow_overlap": True, "data": DATA, "task": TASK, "model": {"init": "scratch"},
                                   "train": {**TRAIN, "lr": source_lr}}}
        spec["grid"]["model.init"] = ["source:src"]
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(study: Path) -> list[dict]:
    with sqlite3.connect(study / "results.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM runs")]


def test_a_source_of_the_same_name_from_another_spec_is_never_reused(tmp_path):
    """A, then B (source `src` with another LR), then A2 (A plus a seed) into one --out: A2's new run starts from
    A's source weights, untouched by B, and every grid run records the source run it started from."""
    write_labelled_pngs(tmp_path)
    out = tmp_path / "study"
    opts = StudyOptions(data_root=tmp_path, probe=False)
    run_study(_spec(tmp_path, "a", 1e-3, [0]), out, opts)
    (a_source,) = [r for r in _rows(out) if r["role"] == "source"]
    a_weights = out / a_source["run_dir"] / "model.safetensors"
    a_sha = _sha(a_weights)
    run_study(_spec(tmp_path, "b", 5e-2, [0]), out, opts)
    sources = [r for r in _rows(out) if r["role"] == "source"]
    assert len(sources) == 2 and len({r["run_dir"] for r in sources}) == 2   # two configs, two folders
    assert _sha(a_weights) == a_sha                                         # B did not overwrite A's source
    summary = run_study(_spec(tmp_path, "a2", 1e-3, [0, 1]), out, opts)
    assert summary.ran == 1                                                  # only the new seed trains
    grid = {(r["seed"], r["source_run_id"]) for r in _rows(out) if r["role"] == "grid"}
    b_source = next(r for r in sources if r["run_id"] != a_source["run_id"])
    assert grid == {(0, a_source["run_id"]), (0, b_source["run_id"]), (1, a_source["run_id"])}
    new = next(r for r in _rows(out) if r["role"] == "grid" and r["seed"] == 1)
    started_from = yaml.safe_load((out / new["run_dir"] / "config.yaml").read_text())["model"]["init"]
    assert started_from == f"checkpoint:{a_weights}"
    source_cfg = yaml.safe_load((out / a_source["run_dir"] / "config.yaml").read_text())
    assert source_cfg["train"]["lr"] == 1e-3 and _sha(a_weights) == a_sha


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 5 MB tmpfs (root only; skipped with the reason where it cannot be mounted); unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_stops_the_study_at_once_and_it_resumes_once_space_is_freed(tmp_path, small_tmpfs, capsys):
    write_labelled_pngs(tmp_path)
    spec = _spec(tmp_path, "plain", None, [0, 1, 2])
    out = small_tmpfs / "study"
    argv = ["study", "run", str(spec), "--out", str(out), "--data-root", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("medtransfer: error:")]
    assert len(lines) == 1, err
    assert str(out) in lines[0] and "no space left" in lines[0] and "MB free on that file system" in lines[0]
    free = float(lines[0].split(" MB free on that file system")[0].rsplit("(", 1)[-1])
    assert free <= 5.3                                     # 5 MiB at most: the tmpfs's free space, not the working directory's
    rows = _rows(out)
    assert not [r for r in rows if r["status"] == "failed"]   # the disk's fault is no run's failure
    started = [p for p in (out / "runs").iterdir()] if (out / "runs").is_dir() else []
    assert len(started) <= 1                               # stopped after at most one run
    subprocess.run(["mount", "-o", "remount,size=300m", str(small_tmpfs)], check=True)
    assert main(argv) == 0
    assert sorted(r["status"] for r in _rows(out) if r["role"] == "grid") == ["done"] * 3


def test_the_lock_names_its_file_when_the_disk_is_full(tmp_path, monkeypatch):
    """os.pwrite raises without a file name: the lock says which file, and the space left where it lives."""
    import errno

    from medtransfer.errors import DiskFull
    from medtransfer.study import lock

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lock.os, "pwrite", full)
    with pytest.raises(DiskFull) as caught:
        with lock.study_lock(tmp_path / "study"):
            pass
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / "study" / ".lock") in message and "MB free" in message
