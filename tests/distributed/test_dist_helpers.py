"""The torchrun helper retries a launch that aborted in gloo's start-up (a known flake: rank 1
died with SIGABRT before training), once, after removing the runs it half started; every
other failure still fails the test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.distributed import dist_helpers

ABORT = (
    "terminate called without an active exception\n"
    "torch.distributed.elastic.multiprocessing.api: failed (exitcode: -6) local_rank: 1"
)


def _done(returncode: int, stderr: str = "") -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess([], returncode, stdout="", stderr=stderr)


def _start_run(experiment: str, metrics: dict[str, float], finish: bool = False) -> str:
    client = MlflowClient()
    exp_id = mlflow.get_experiment_by_name(experiment).experiment_id
    run_id = client.create_run(exp_id).info.run_id
    for key, value in metrics.items():
        client.log_metric(run_id, key, value, step=1)
    if finish:
        client.set_terminated(run_id, "FINISHED")
    return run_id


def _active_runs(experiment: str) -> list:
    exp_id = mlflow.get_experiment_by_name(experiment).experiment_id
    return MlflowClient().search_runs([exp_id])


def test_a_startup_abort_is_one_that_trained_nothing(fresh_experiment):
    _start_run(fresh_experiment, {"data/train_images": 40.0})  # data metrics come first
    assert dist_helpers.aborted_before_training(ABORT, fresh_experiment)
    assert not dist_helpers.aborted_before_training("ValueError: boom", fresh_experiment)
    _start_run(fresh_experiment, {"train/loss": 4.0})  # training had started
    assert not dist_helpers.aborted_before_training(ABORT, fresh_experiment)


def test_half_started_runs_are_ended_and_deleted_finished_ones_kept(fresh_experiment):
    running = _start_run(fresh_experiment, {})
    finished = _start_run(fresh_experiment, {}, finish=True)
    assert dist_helpers.end_half_started_runs(fresh_experiment) == [running]
    assert [r.info.run_id for r in _active_runs(fresh_experiment)] == [finished]
    gone = MlflowClient().get_run(running)
    assert gone.info.status == "FAILED" and gone.info.lifecycle_stage == "deleted"


def _fake_launches(monkeypatch, experiment: str, outcomes: list[tuple[int, str]]) -> list[int]:
    """`_launch_torchrun` answering `outcomes` in turn; a failing one leaves a RUNNING run."""
    calls: list[int] = []

    def launch(*args, **kwargs):
        returncode, stderr = outcomes[len(calls)]
        calls.append(returncode)
        if returncode != 0:
            _start_run(experiment, {})
        return _done(returncode, stderr)

    monkeypatch.setattr(dist_helpers, "_launch_torchrun", launch)
    return calls


def _run(experiment: str) -> None:
    dist_helpers.torchrun("entrypoints/pretrain.py", [], {}, Path("."), experiment=experiment)


def test_a_startup_abort_is_retried_once_without_its_half_started_run(
    fresh_experiment, monkeypatch
):
    calls = _fake_launches(monkeypatch, fresh_experiment, [(1, ABORT), (0, "")])
    _run(fresh_experiment)
    assert calls == [1, 0]
    assert _active_runs(fresh_experiment) == []


@pytest.mark.parametrize(
    "outcomes", [[(1, "ValueError: a real bug")], [(1, ABORT), (1, ABORT)]], ids=["real", "twice"]
)
def test_other_failures_and_a_second_abort_still_fail(fresh_experiment, monkeypatch, outcomes):
    calls = _fake_launches(monkeypatch, fresh_experiment, outcomes)
    with pytest.raises(AssertionError, match="torchrun entrypoints/pretrain.py failed"):
        _run(fresh_experiment)
    assert len(calls) == len(outcomes)
