"""Run a workflow's independent steps (compare's cells) in worker processes on one machine.

Workers are spawned (no fork of a process that holds torch threads and an MLflow run),
use one torch thread each, and talk to the same tracking store as the parent. Every run a
worker starts is a child of the parent's run (`tracking.children_of`), as it would be
in one process. Each item is handed to exactly one worker, so no step runs twice within
one workflow; a rerun after an interruption finds the finished steps by their parameter
digest (`steps.reuse_or_run`) and runs only the rest.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

import mlflow

from eibacl import tracking

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
T = TypeVar("T", bound=Hashable)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def auto_workers(tasks: int, device: str) -> int:
    """`workers=auto`: one per usable core, at most one per task; 1 where a run would use
    CUDA (one process owns the GPU)."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return 1
    return max(1, min(usable_cores(), tasks))


class WorkerPool:
    """`map` items over `workers` spawned processes (or this one, for 1 worker)."""

    def __init__(self, workers: int, parent_run_id: str) -> None:
        self.workers = workers
        self.parent_run_id = parent_run_id
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> WorkerPool:
        if self.workers > 1:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(mlflow.get_tracking_uri(), tracking.experiment_id()),
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            # on an error or interrupt, start nothing new; finished steps are in the store
            self._pool.shutdown(wait=True, cancel_futures=exc[0] is not None)

    def map(
        self,
        function: Callable[[T], str],
        items: Sequence[T],
        on_done: Callable[[T, str], None] = lambda item, result: None,
    ) -> list[str]:
        """`function(item)` for every item (each exactly once), results in item order;
        `on_done` is called in this process as each one finishes. `function` must be a
        module-level function or a partial of one (it is pickled to the workers)."""
        if len(set(items)) != len(items):
            raise ValueError("the same item was given twice: each step runs once")
        if self._pool is None:
            results = []
            for item in items:
                results.append(function(item))
                on_done(item, results[-1])
            return results
        futures: dict[Future, int] = {
            self._pool.submit(_in_worker, function, item, self.parent_run_id): i
            for i, item in enumerate(items)
        }
        done: dict[int, str] = {}
        for future in as_completed(futures):
            index = futures[future]
            done[index] = future.result()  # a worker's error stops the workflow here
            on_done(items[index], done[index])
        return [done[i] for i in range(len(items))]


def _start_worker(tracking_uri: str, experiment_id: str) -> None:
    import torch

    _end_with_parent()
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
    mlflow.set_tracking_uri(tracking_uri)
    logging.basicConfig(level=logging.INFO, format=f"[worker {os.getpid()}] %(message)s")


_BUSY = False  # a worker is running a step (its SIGTERM must end that step's run first)


def _in_worker(function: Callable[[Any], str], item: Any, parent_run_id: str) -> str:
    global _BUSY
    _BUSY = True
    try:
        with tracking.children_of(parent_run_id):
            return function(item)
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM: the step's run has ended as KILLED on the way here; a worker
        # told to stop exits instead of taking the next step (or waiting on a dead parent)
        os._exit(130)
    finally:
        _BUSY = False


def _end_with_parent() -> None:
    """SIGTERM this worker when the parent process dies (even by kill -9); on SIGTERM a busy
    worker ends its run as KILLED, like Ctrl-C, and exits (an orphan never finishes a cell
    that the rerun is running again), an idle one exits at once. Linux only (prctl);
    elsewhere orphans finish their current cell."""
    import signal

    from eibacl.train.stopping import Terminated

    def terminated(signum: int, frame: object) -> None:
        if not _BUSY:
            os._exit(128 + signum)  # idle: nothing to end, and the queue may never answer
        raise Terminated(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminated)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        log.info("worker %d: no prctl here; it finishes its cell if compare dies", os.getpid())
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
