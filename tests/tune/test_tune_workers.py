"""Two worker processes run `entrypoints/tune.py` on one SQLite study at the same time:
every trial number is handed out once, and all trials log under one parent run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from eibacl import names
from eibacl.tune import tune
from eibacl.tune.objective import PRETRAIN_RUN, PROBE_RUN

ENTRY_POINT = Path(__file__).resolve().parents[2] / "entrypoints" / "tune.py"


def test_two_workers_share_one_study_without_running_a_trial_twice(
    tmp_path, fresh_experiment, runs_of, tiny_tune_settings
):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    settings = tiny_tune_settings | {"epochs": 1, "warmup_epochs": 0, "register": False}
    args = [f"--{k}={v}" for k, v in settings.items()]
    args += [f"--storage={storage}", "--study_name=workers", "--n_trials=1"]
    env = os.environ | {"MLFLOW_EXPERIMENT_NAME": fresh_experiment, "PYTHONUNBUFFERED": "1"}
    workers = [
        subprocess.Popen(
            [sys.executable, str(ENTRY_POINT), *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]

    study = optuna.load_study(study_name="workers", storage=storage)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    # each process ran exactly one of them
    finished = sorted([n for n in (0, 1) if f"Trial {n} finished" in output] for output in outputs)
    assert finished == [[0], [1]], [o[-2000:] for o in outputs]

    parents = runs_of(fresh_experiment, f"tags.`{names.ENTRY_TAG}` = 'tune'")
    assert len(parents) == 1, "both workers log under the study's one parent run"
    parent_id = parents[0].info.run_id
    client = MlflowClient()
    run_ids = set()
    for trial in trials:
        for key in (PRETRAIN_RUN, PROBE_RUN):
            run = client.get_run(trial.user_attrs[key])
            assert run.data.tags["mlflow.parentRunId"] == parent_id
            assert run.data.tags[names.TRIAL_TAG] == str(trial.number)
            run_ids.add(run.info.run_id)
    assert len(run_ids) == 4
    assert not (tmp_path / "mlruns").exists() or not any((tmp_path / "mlruns").iterdir())


def test_a_worker_whose_parent_parameters_are_logged_concurrently_goes_on(
    tiny_tune, storage, fresh_experiment, runs_of, monkeypatch
):
    """Two workers resuming the study's parent run log its parameters at the same moment;
    the later insert fails in the store. Simulated: the first log_params call fails."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from eibacl.train import pretrain as pretrain_module

    def diverging(config, on_epoch=None, nested=False):
        raise FloatingPointError("not trained in this test")

    monkeypatch.setattr(pretrain_module, "pretrain", diverging)
    original, calls = mlflow.log_params, []

    def racing(params, *args, **kwargs):
        calls.append(dict(params))
        if len(calls) == 1:
            original({"objective": params["objective"]})  # the other worker was faster
            raise MlflowException("UNIQUE constraint failed: params.key, params.run_uuid")
        return original(params, *args, **kwargs)

    monkeypatch.setattr(mlflow, "log_params", racing)
    tune(tiny_tune(storage=storage, study_name="race", n_trials=1))
    (parent,) = runs_of(fresh_experiment)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["n_trials"] == "1" and parent.data.params["objective"]
    assert len(calls) >= 2


def test_workers_creating_a_new_storage_together_retry_instead_of_failing(tmp_path, monkeypatch):
    """Two processes opening a new database at once: the one that loses the race to
    create the tables gets an IntegrityError (UNIQUE constraint on alembic_version)."""
    from sqlalchemy.exc import IntegrityError

    from eibacl.tune.study import open_storage

    real, calls = optuna.storages.RDBStorage, []

    def losing_first(url, **kwargs):
        calls.append(url)
        if len(calls) == 1:
            real(url, **kwargs)  # the other worker creates the tables ...
            raise IntegrityError(  # ... and this one collides with it
                "INSERT INTO alembic_version",
                {},
                Exception("UNIQUE constraint failed: alembic_version.version_num"),
            )
        return real(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", losing_first)
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(calls) == 2
    assert storage.get_all_studies() == []
