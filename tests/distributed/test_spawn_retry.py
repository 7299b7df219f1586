"""The spawned-group helper retries gloo's start-up abort once, and only that."""

from __future__ import annotations

import uuid

import pytest
from torch.multiprocessing import ProcessExitedException

from tests.distributed.dist_helpers import spawn
from tests.distributed.dist_workers import abort_once_worker


def test_a_start_up_abort_before_training_is_retried_once(tmp_path, mlflow_home, make_experiment):
    name = f"abort-{uuid.uuid4().hex[:8]}"
    make_experiment(name)
    marker = tmp_path / "aborted"
    spawn(abort_once_worker, 2, str(marker), timeout=60, experiment=name)
    assert marker.exists()  # the first launch did abort; the retry finished


def test_without_an_experiment_the_abort_is_raised(tmp_path):
    with pytest.raises(ProcessExitedException, match="SIGABRT"):
        spawn(abort_once_worker, 2, str(tmp_path / "aborted"), timeout=60)
