"""An interrupted `compare` continues where it stopped: a real SIGKILL, then a rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow

from eibacl.config import CompareConfig
from eibacl.workflow.compare import compare
from tests.workflow.test_main_and_compare import TINY as GRID_TINY

TINY = GRID_TINY | dict(register=False, seeds=3, methods="supcon", modes="none")

CHILD = """
import sys
from eibacl.config import CompareConfig
from eibacl.workflow.compare import compare
compare(CompareConfig(**eval(sys.argv[1])))
"""


def _finished_probes(experiment: str) -> list:
    return mlflow.search_runs(
        experiment_names=[experiment],
        filter_string="tags.`eibacl.entry_point` = 'probe' and attributes.status = 'FINISHED'",
        output_format="list",
    )


def test_killed_compare_reuses_its_finished_cells(fresh_experiment):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", CHILD, repr(TINY)], env=env)
    try:
        deadline = time.monotonic() + 600
        while len(_finished_probes(fresh_experiment)) < 1:
            assert child.poll() is None, "compare ended before it could be interrupted"
            assert time.monotonic() < deadline, "no cell finished in 10 minutes"
            time.sleep(0.5)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    done = {r.info.run_id for r in _finished_probes(fresh_experiment)}
    assert 1 <= len(done) < 3  # killed mid-grid
    result = compare(CompareConfig(**TINY))
    cells = {run.run_id for run in result.runs}
    assert done <= cells  # the finished cells were reused, not run again
    assert len(_finished_probes(fresh_experiment)) == 3  # each cell ran to the end once
    assert sorted(run.seed for run in result.runs) == [0, 1, 2]
