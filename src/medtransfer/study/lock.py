"""One writer per study folder: an exclusive lock that a dead process cannot leave behind.

``study run`` and ``report`` write STUDY_DIR (the store, run folders, report files); two of
them at once would train the same runs twice and unlink each other's logs. The lock is a
``fcntl.flock`` on ``STUDY_DIR/.lock``: the kernel releases it when its holder exits, however
it exits (``kill -9`` included), so a stale lock is impossible by construction on one host.
The file also holds the holder's pid, host and start time, which is what a second writer is
told. (On a network file system without ``flock`` support the lock degrades to advisory text.)

Taking the lock also sweeps ``*.tmp*`` files older than the lock: while we hold it nobody else
writes here, so such a file is the half-write of a process that died, never a result.
"""
from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from ..errors import MedtransferError, write_error

LOCK_FILE = ".lock"

_held: dict[Path, int] = {}   # study folders this process holds -> re-entry depth (a holder may call another writer)


class StudyInUse(MedtransferError):
    """Another live process holds the study folder."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('since', '?')}"
            if info else "another process")


@contextmanager
def study_lock(study_dir: Path, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold STUDY_DIR exclusively for the block; raise StudyInUse at once if someone else does."""
    import fcntl  # POSIX only, like an optional dependency: imported when a lock is taken, not with the package

    study_dir = Path(study_dir).resolve()
    if study_dir in _held:
        _held[study_dir] += 1
        try:
            yield
        finally:
            _held[study_dir] -= 1
        return
    study_dir.mkdir(parents=True, exist_ok=True)
    path = study_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyInUse(f"{study_dir} is in use by {_holder(path)}; wait for it to finish "
                             "(`medtransfer study status` is safe meanwhile)") from None
        taken = time.time()
        stamp = {"pid": os.getpid(), "host": socket.gethostname(),
                 "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(stamp).encode(), 0)
        except OSError as err:   # os.pwrite names no file: say which, and the space left where it lives
            raise write_error(path, err) from None
        swept = sweep_temp_files(study_dir, older_than=taken)
        if swept and log:
            log(f"removed {swept} temporary file(s) left by an interrupted writer")
        _held[study_dir] = 1
        try:
            yield
        finally:
            del _held[study_dir]
            try:
                os.ftruncate(fd, 0)
            except OSError:   # the holder's stamp is cosmetic; the flock is released by closing
                pass
    finally:
        os.close(fd)   # closing the descriptor releases the flock


def sweep_temp_files(study_dir: Path, older_than: float) -> int:
    """Delete ``*.tmp*`` files under STUDY_DIR last written before ``older_than`` (seconds since epoch)."""
    count = 0
    for path in Path(study_dir).rglob("*.tmp*"):
        try:
            if path.is_file() and path.stat().st_mtime < older_than:
                path.unlink()
                count += 1
        except OSError:   # vanished meanwhile, or not ours to delete: not a result either way
            continue
    return count
