"""compare's bad inputs (one clear line each, before any cell runs) and its worker plumbing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from eibacl import tracking
from eibacl.config import CompareConfig, ConfigError
from eibacl.workflow.compare import compare
from eibacl.workflow.parallel import WorkerPool, auto_workers


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(splits="0"), r"^splits='0' is invalid: use a number >= 1, or auto \(1 for"),
        (dict(splits=-2), r"^splits=-2 is invalid"),
        (dict(workers="0"), r"^workers='0' is invalid: use a number >= 1, or auto\.$"),
        (
            dict(workers="5", seeds=2, methods="supcon", modes="none,positives"),
            r"^workers='5' is invalid: the grid has 4 cells .* use workers <= 4, or auto\.$",
        ),
    ],
)
def test_bad_splits_and_workers_are_one_line(changes, message):
    with pytest.raises(ConfigError, match=message) as error:
        CompareConfig(**changes)
    assert "\n" not in str(error.value)


def test_grid_size_counts_splits_and_auto_splits_follow_the_source():
    config = CompareConfig(seeds=2, splits="3", workers="12")
    assert (config.split_count(), config.cell_count()) == (3, 2 * 4 * 2 * 3)
    assert CompareConfig(data="folder:/somewhere").split_count() == 5
    assert CompareConfig().split_count() == 1


def test_one_synthetic_set_for_several_splits_is_refused_before_any_run(fresh_experiment):
    config = CompareConfig(splits=2, synthetic_set="/some/set", modes="positives", seeds=1)
    with pytest.raises(ConfigError, match=r"^synthetic_set=/some/set is one split's set, but"):
        compare(config)
    assert mlflow.search_runs(experiment_names=[fresh_experiment], output_format="list") == []


def test_auto_workers_fit_the_cores_and_the_tasks():
    assert auto_workers(1, "cpu") == 1
    assert 1 <= auto_workers(100, "cpu") <= 100


def test_pool_runs_each_item_once():
    with WorkerPool(1, "unused") as pool:
        seen = []
        assert pool.map(str, [1, 2], on_done=lambda i, r: seen.append(i)) == ["1", "2"]
        assert seen == [1, 2]
        with pytest.raises(ValueError, match="the same item was given twice"):
            pool.map(str, [1, 1])


def test_runs_started_in_a_worker_become_children_of_the_parent(fresh_experiment):
    """What a worker process does: no active run, the parent's id adopted."""
    parent = tracking.create_run({}, "parent")
    with tracking.children_of(parent):
        with tracking.start_run(run_name="cell", nested=True) as child:
            with tracking.start_run(run_name="inner", nested=True) as inner:
                pass
    tags = tracking.get_run(child.info.run_id).data.tags
    assert tags["mlflow.parentRunId"] == parent
    inner_tags = tracking.get_run(inner.info.run_id).data.tags
    assert inner_tags["mlflow.parentRunId"] == child.info.run_id
    assert tracking.get_run(parent).info.status == "RUNNING"  # neither resumed nor ended
    with tracking.start_run(run_name="later", nested=True) as later:
        pass
    assert "mlflow.parentRunId" not in tracking.get_run(later.info.run_id).data.tags


POOL_CHILD = """
import time
from eibacl.workflow.parallel import WorkerPool
with WorkerPool(2, "no-parent-run") as pool:
    pool.map(time.sleep, [300, 301])
"""


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_workers_end_when_compare_is_killed():
    """kill -9 of the process that holds the pool: its busy workers get SIGTERM and exit
    instead of finishing (or waiting for) cells a rerun would run again."""
    child = subprocess.Popen([sys.executable, "-c", POOL_CHILD])
    try:
        deadline = time.monotonic() + 120
        while len(_children(child.pid)) < 3:  # the resource tracker and two workers
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        workers = _children(child.pid)
        time.sleep(15)  # let them import and start sleeping in their step
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:  # do not leak them into the rest of the session
        os.kill(pid, signal.SIGKILL)
    assert not left, "workers outlived their killed parent"
