"""Chunks of independent work over all cores, with one progress bar, cancellation, and no orphans.

The image cache (decoding) and the radiomics features (extraction) both run a pure function
over chunks of items in worker processes. Here is the one way they do it:
- fork on Linux, so a user's script or notebook needs no ``__main__`` guard; spawn when CUDA
  is already initialised (a forked child must not inherit a CUDA context) or off Linux. The
  workers only run PIL / numpy / pydicom / pyradiomics, never torch, so forking is safe.
- chunks are submitted (and so the workers forked) before the progress bar starts its thread;
- an interrupt or error cancels what has not started and waits for the rest;
- each worker watches its parent and exits when the parent is gone (``kill -9`` of the driver
  leaves no decoding or training process behind).

``torch_threads`` is the other half of sharing the cores: the CPU threads one training run uses.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

PARENT_POLL_S = 0.5


def worker_context():
    torch = sys.modules.get("torch")
    cuda_live = bool(torch is not None and getattr(torch, "cuda", None) and torch.cuda.is_initialized())
    use_fork = sys.platform.startswith("linux") and not cuda_live
    return multiprocessing.get_context("fork" if use_fork else "spawn")


def exit_with_parent(parent_pid: int) -> None:
    """Start a daemon thread that ends this process once ``parent_pid`` is no longer its parent."""
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(parent_pid: int, initializer: Callable[[], None] | None) -> None:
    exit_with_parent(parent_pid)
    if initializer is not None:
        initializer()


def orphan_proof_pool(workers: int, mp_context=None, initializer: Callable[[], None] | None = None
                      ) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor whose workers exit when this process dies."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp_context or worker_context(),
                               initializer=_init_worker, initargs=(os.getpid(), initializer))


@dataclass(frozen=True)
class Chunking:
    """How ``map_chunks`` runs: its bar's label, the worker processes (0: every core), whether to show the
    bar, up to how many items stay in this process, the chunk sizes, and the workers' two hooks."""
    label: str
    workers: int
    progress: bool
    in_process_max: int
    max_chunk: int
    min_chunk: int = 1
    initializer: Callable[[], None] | None = None                        # run once in each worker
    on_error: Callable[[Sequence, BaseException], object] | None = None  # (chunk, err) -> the chunk's result


def map_chunks(fn: Callable, items: Sequence, **chunking) -> Iterator[tuple[int, Sequence, object]]:
    """Yield ``(start, chunk, fn(chunk))`` for consecutive chunks of ``items``, as each finishes.

    ``chunking``: the fields of ``Chunking``, as keywords. In this process when ``workers == 1`` or there
    are at most ``in_process_max`` items; else in ``workers`` processes, with at least 8 chunks per worker
    (a balanced tail) of ``min_chunk``..``max_chunk`` items. ``on_error(chunk, err)``, when given, turns a
    chunk whose worker failed into a result; otherwise the error propagates (a worker's DataError names its file).
    """
    how = Chunking(**chunking)
    n = len(items)
    workers = how.workers or os.cpu_count() or 1
    columns = (TextColumn(how.label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    if workers == 1 or n <= how.in_process_max:
        with Progress(*columns, disable=not how.progress, transient=True) as bar:
            task = bar.add_task(how.label, total=n)
            for start in range(n):
                chunk = items[start:start + 1]
                yield start, chunk, fn(chunk)
                bar.advance(task)
        return
    size = max(how.min_chunk, min(how.max_chunk, math.ceil(n / (workers * 8))))
    starts = list(range(0, n, size))
    with orphan_proof_pool(min(workers, len(starts)), initializer=how.initializer) as pool:
        futures = {pool.submit(fn, items[s:s + size]): s for s in starts}
        try:
            with Progress(*columns, disable=not how.progress, transient=True) as bar:
                task = bar.add_task(how.label, total=n)
                for fut in as_completed(futures):
                    start = futures[fut]
                    chunk = items[start:start + size]
                    try:
                        result = fut.result()
                    except Exception as err:
                        if how.on_error is None:
                            raise
                        result = how.on_error(chunk, err)
                    yield start, chunk, result
                    bar.advance(task, len(chunk))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


@contextmanager
def torch_threads(threads: int | None):
    """Run the block on ``threads`` CPU threads (the run's config fixes them), then restore the caller's count."""
    if not threads:
        yield
        return
    # torch is imported here, not at the top: this module is loaded by `medtransfer --help` (through
    # study.executors) and by the decoding workers, which never use torch; importing it costs seconds
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
