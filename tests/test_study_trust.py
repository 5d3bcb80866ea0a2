"""Issue 8 acceptance: one writer, rows of the current spec only, no orphans, no silent wrong numbers."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medtransfer.cli import main
from medtransfer.report import write_report

import test_study_runner as fakes

TESTS = Path(__file__).resolve().parent


def _spec(tmp_path, name="s.yaml", **changes):
    tree = json.loads(json.dumps(fakes.SPEC))
    tree.update(sources={}, grid={"train.n_train": [50, 200], "train.seed": [0, 1]})
    for key, value in changes.items():
        tree[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree))
    return path


def test_edit_and_rerun_reports_only_the_current_plan(tmp_path):
    out = tmp_path / "S"
    fakes.run(_spec(tmp_path), out)
    edited = json.loads(json.dumps(fakes.SPEC))
    edited.update(sources={}, grid={"train.n_train": [50], "train.seed": [0, 1]})
    edited["base"]["train"]["epochs"] = 2          # a changed base key: new run ids
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(edited))
    fakes.run(spec, out)
    assert len(fakes.db_rows(out)) == 6             # 4 old rows kept in the store, 2 new
    html = write_report(out).read_text()
    summary = pd.read_csv(out / "summary.csv")
    assert summary["n_train"].astype(str).tolist() == ["50"]
    assert summary["n_seeds"].tolist() == [2] and summary["n_runs"].tolist() == [2]
    assert "4 run(s) in the store belong to an earlier version of the spec" in html
    write_report(out, all_versions=True)
    every = pd.read_csv(out / "summary.csv")
    assert set(every["n_train"].astype(str)) == {"50", "200"}
    assert every.loc[every["n_train"].astype(str) == "50", "n_seeds"].tolist() == [2]   # distinct seeds, not rows


HOLD = """
import sys, time
from pathlib import Path
from medtransfer.study.lock import study_lock
with study_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_study_run_exits_2_at_once_naming_the_first(tmp_path, capsys):
    out = tmp_path / "S"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.time()
        code = main(["study", "run", str(_spec(tmp_path)), "--out", str(out), "--data-root", str(tmp_path)])
        assert code == 2 and time.time() - started < 2
        err = capsys.readouterr().err.strip()
        assert f"in use by pid {holder.pid}" in err and len(err.splitlines()) == 1
        assert not (out / "results.sqlite").exists()    # nothing ran
    finally:
        holder.kill()
        holder.wait()


DRIVER = """
import sys
sys.path.insert(0, {tests!r})
from test_study_runner import fake_run
from medtransfer.study import StudyOptions, run_study
run_study({spec!r}, {out!r}, StudyOptions(data_root={root!r}, run_fn=fake_run, probe=False, workers=2))
"""


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
def test_killing_a_two_worker_driver_leaves_no_worker_alive(tmp_path):
    spec = _spec(tmp_path, grid={"train.n_train": [50, 200], "train.seed": [0, 1, 2, 3]})
    script = DRIVER.format(tests=str(TESTS), spec=str(spec), out=str(tmp_path / "S"), root=str(tmp_path))
    driver = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ, FAKE_RUN_SECONDS="30"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, workers = time.time() + 60, set()
    while time.time() < deadline and len(workers) < 2:
        workers = {p for p in _children(driver.pid) if "spawn" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
                   or "multiprocessing" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")}
        time.sleep(0.2)
    assert len(workers) >= 2, "the driver never started its workers"
    time.sleep(1.0)   # the workers are inside their 30 s runs
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in workers):
        time.sleep(0.2)
    alive = [p for p in workers if Path(f"/proc/{p}").exists()
             and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    assert not alive, f"workers {alive} outlived their driver"


def test_a_corrupt_store_is_one_line_and_moving_it_away_rebuilds_from_the_run_folders(tmp_path, capsys):
    out = tmp_path / "S"
    fakes.run(_spec(tmp_path), out)
    before = {r["run_id"]: r["test_auroc"] for r in fakes.db_rows(out)}
    store = out / "results.sqlite"
    for extra in ("-wal", "-shm"):
        Path(f"{store}{extra}").unlink(missing_ok=True)
    store.write_bytes(os.urandom(4096))
    capsys.readouterr()
    assert main(["study", "status", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a readable SQLite database" in err and "move it away" in err
    assert main(["report", str(out)]) == 2
    assert main(["study", "run", str(_spec(tmp_path)), "--out", str(out), "--data-root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("is not a readable SQLite database") == 2
    shutil.move(store, tmp_path / "broken.sqlite")
    calls = []
    fakes.run(_spec(tmp_path), out, fn=lambda *a, **k: calls.append(1) or fakes.fake_run(*a, **k))
    assert calls == []                                                   # nothing retrained
    assert {r["run_id"]: r["test_auroc"] for r in fakes.db_rows(out)} == before


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                        capture_output=True).returncode == 0
    return ok


def test_a_full_disk_is_one_line_and_leaves_no_temp_file(tmp_path, capsys, shared_data):
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "600k"):
        pytest.skip("mounting a small tmpfs is not allowed here")
    try:
        code = main(["train", str(TESTS.parent / "examples" / "pneumoniamnist.yaml"), "--data-root", str(shared_data),
                     "--set", "train.n_train=50", "--set", "train.epochs=1", "--set", "train.min_steps=0", "--set", "model.arch=resnet18",
                     "--out", str(disk / "run"), "--quiet"])
        err = capsys.readouterr().err.strip()
        assert code == 2, err
        assert len(err.splitlines()) == 1 and "no space left on the device" in err and "MB free" in err
        assert not list(disk.rglob("*.tmp*"))
        assert not (disk / "run" / "metrics.json").exists()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_status_counts_the_plan_a_two_worker_run_executed(tmp_path):
    out = tmp_path / "S"
    fakes.run(_spec(tmp_path), out)
    fakes.run(_spec(tmp_path), out, workers=2)          # other thread counts: other run ids
    text = fakes.study_status(out)
    assert "4 runs: 4 done, 0 failed, 0 skipped, 0 pending" in text
    assert "4 rows in the store belong to an earlier version of the spec" in text
    assert "train.seed: 0 2/2, 1 2/2" in text
