"""Helpers of the multi-process tests: free ports, spawned process groups, torchrun.

Imported as `tests.distributed.dist_helpers` (pytest puts the checkout on `sys.path`;
spawned children get the parent's `sys.path`), so every worker function is picklable by
reference.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def loopback_env(world: int, port: int) -> dict[str, str]:
    """What torchrun sets, on loopback (gloo on `lo`, one thread per process)."""
    return {
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
    }


def join_group(rank: int, world: int, port: int) -> None:
    """In a spawned child: torchrun's environment for `rank`, then `init_from_env`."""
    os.environ.update(loopback_env(world, port))
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank)})
    import torch

    torch.set_num_threads(1)
    from eibacl import distributed

    assert distributed.init_from_env()


def leave_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def spawn(
    function: Callable[..., Any],
    world: int,
    *args: Any,
    timeout: float = 180,
    experiment: str | None = None,
) -> None:
    """Run `function(rank, world, port, *args)` in `world` spawned processes; raise what a
    child raised, or TimeoutError (the children are then killed).

    With `experiment` (the fresh experiment the workers log to): a child killed by SIGABRT
    before any run of `experiment` trained (gloo's start-up abort, as with `torchrun`) is
    retried once on a new port, after its half-started runs are ended and deleted."""
    from torch.multiprocessing import ProcessExitedException

    try:
        _spawn_once(function, world, args, timeout)
    except ProcessExitedException as died:
        if experiment is None or not aborted_before_training(str(died), experiment):
            raise
        ended = end_half_started_runs(experiment)
        print(
            f"spawned group aborted at start-up; ended {len(ended)} half-started run(s); retrying"
        )
        _spawn_once(function, world, args, timeout)


def _spawn_once(function: Callable[..., Any], world: int, args: tuple, timeout: float) -> None:
    import torch.multiprocessing as mp

    port = free_port()
    context = mp.start_processes(
        function, args=(world, port, *args), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{function.__name__} did not finish in {timeout} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


# What a worker that died in gloo's start-up leaves in torchrun's output (rank 1 aborted
# before training: "terminate called without an active exception", then SIGABRT).
STARTUP_ABORT = re.compile(
    r"terminate called without an active exception|SIGABRT|exitcode\s*:\s*-6"
)


def torchrun(
    script: str,
    args: list[str],
    env: dict[str, str],
    cwd: Path,
    nproc: int = 2,
    timeout: float = 240,
    experiment: str | None = None,
) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node nproc <repo>/script args` on loopback, run in `cwd`.

    With `experiment` (the experiment the run logs to, fresh for the test): a launch that
    aborted in start-up before any training (`aborted_before_training`) is retried once, after
    its half-started runs are ended and deleted (so the test's run counts hold); any other
    failure, and a second abort, raise."""

    def launch() -> subprocess.CompletedProcess:
        return _launch_torchrun(script, args, env, cwd, nproc, timeout)

    done = launch()
    if (
        done.returncode != 0
        and experiment
        and aborted_before_training(f"{done.stdout}\n{done.stderr}", experiment)
    ):
        ended = end_half_started_runs(experiment)
        print(f"torchrun aborted at start-up; ended {len(ended)} half-started run(s); retrying")
        done = launch()
    if done.returncode != 0:
        raise AssertionError(
            f"torchrun {script} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
            f"{done.stderr[-6000:]}"
        )
    return done


def _launch_torchrun(
    script: str, args: list[str], env: dict[str, str], cwd: Path, nproc: int, timeout: float
) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        str(REPO / script),
        *args,
    ]
    full_env = os.environ | {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"} | env
    full_env.pop("WORLD_SIZE", None)
    return subprocess.run(
        command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def _experiment_runs(experiment: str) -> list:
    import mlflow
    from mlflow.tracking import MlflowClient

    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return []
    return MlflowClient().search_runs([found.experiment_id], max_results=100)


def aborted_before_training(output: str, experiment: str) -> bool:
    """`output` (torchrun's streams, or the spawned group's error) shows the start-up abort's
    signature and nothing trained: no run of `experiment` holds a training loss (the data's
    metrics come before training)."""
    from eibacl.names import TRAIN_LOSS

    aborted = STARTUP_ABORT.search(output) is not None
    trained = any(TRAIN_LOSS in run.data.metrics for run in _experiment_runs(experiment))
    return aborted and not trained


def end_half_started_runs(experiment: str) -> list[str]:
    """End (FAILED) and delete the runs of `experiment` that are still RUNNING."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    ended = [
        run.info.run_id for run in _experiment_runs(experiment) if run.info.status == "RUNNING"
    ]
    for run_id in ended:
        client.set_terminated(run_id, "FAILED")
        client.delete_run(run_id)
    return ended


def cli_args(values: dict[str, Any]) -> list[str]:
    """{'epochs': 2} -> ['--epochs', '2'] for an entry point."""
    out: list[str] = []
    for key, value in values.items():
        out += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return out
