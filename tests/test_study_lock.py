"""One writer per study folder: a second writer is refused at once, a dead one leaves nothing behind."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medtransfer.study.lock import LOCK_FILE, StudyInUse, study_lock

HOLD = """
import sys, time
from pathlib import Path
from medtransfer.study.lock import study_lock
with study_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(study: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(study)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_naming_the_first_and_a_killed_holder_frees_the_folder(tmp_path):
    study = tmp_path / "S"
    proc = _holder(study)
    try:
        t0 = time.time()
        with pytest.raises(StudyInUse) as err:
            with study_lock(study):
                pass
        assert time.time() - t0 < 2
        assert f"pid {proc.pid}" in str(err.value) and str(study.resolve()) in str(err.value)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with study_lock(study):   # the kernel released the dead holder's lock: no stale lock
        assert str(os.getpid()) in (study / LOCK_FILE).read_text()


def test_lock_is_reentrant_in_one_process_and_sweeps_old_temp_files(tmp_path):
    study = tmp_path / "S"
    (study / "runs" / "abc").mkdir(parents=True)
    stale = study / "runs" / "abc" / "metrics.json.tmp"
    stale.write_text("half")
    old = time.time() - 100
    os.utime(stale, (old, old))
    keep = study / "runs" / "abc" / "metrics.json"
    keep.write_text("{}")
    lines = []
    with study_lock(study, log=lines.append):
        with study_lock(study):   # run_study writes the report while holding the lock
            pass
        assert not stale.exists() and keep.exists()
        assert lines and "1 temporary file" in lines[0]
