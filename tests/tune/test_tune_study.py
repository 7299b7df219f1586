"""A tiny single-objective study end to end (3 trials over temperature), then the same
study continued with a trial the median pruner stops."""

from __future__ import annotations

import csv
import io
import json

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from eibacl import names, tracking
from eibacl.tune import tune
from eibacl.tune.objective import PRETRAIN_RUN, PROBE_RUN

PARENT = "mlflow.parentRunId"


@pytest.fixture(scope="module")
def study_run(own_tracking, tiny_tune, tmp_path_factory):
    storage = f"sqlite:///{tmp_path_factory.mktemp('optuna') / 'optuna.db'}"
    # pruner none: with 2 epochs the median pruner could stop the third trial
    config = tiny_tune(storage=storage, study_name="tiny", n_trials=3, seed=1, pruner="none")
    result = tune(config)
    client = MlflowClient()
    return {
        "config": config,
        "result": result,
        "tracking": own_tracking,
        "parent": client.get_run(result.parent_run_id),
        "trials": result.study.get_trials(),
    }


def _children(runs_of, study_run):
    parent_id = study_run["result"].parent_run_id
    return runs_of(study_run["tracking"].experiment, f"tags.`{PARENT}` = '{parent_id}'")


def test_three_trials_complete_with_values_from_validation_accuracy(study_run):
    trials = study_run["trials"]
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    temperatures = [t.params["temperature"] for t in trials]
    assert all(0.03 <= x <= 0.5 for x in temperatures) and len(set(temperatures)) == 3
    client = MlflowClient()
    for trial in trials:  # the objective is the probe's val/accuracy, never a test metric
        probe_run = client.get_run(trial.user_attrs[PROBE_RUN])
        assert trial.value == pytest.approx(probe_run.data.metrics["val/accuracy"])
        pretrain_run = client.get_run(trial.user_attrs[PRETRAIN_RUN])
        assert float(pretrain_run.data.params["temperature"]) == pytest.approx(
            trial.params["temperature"]
        )
        # the pruner saw the validation kNN accuracy of every epoch
        assert sorted(trial.intermediate_values) == [1, 2]


def test_trial_probes_use_the_studys_far_ood_set(study_run):
    far_ood = study_run["config"].far_ood
    assert far_ood.startswith("folder:")  # the tests' noise images, not MNIST
    client = MlflowClient()
    for trial in study_run["trials"]:
        probe_run = client.get_run(trial.user_attrs[PROBE_RUN])
        assert probe_run.data.params["far_ood"] == far_ood
        assert "ood/far/knn/auroc" in probe_run.data.metrics


def test_each_trial_has_a_pretrain_and_a_probe_run_nested_in_the_study_run(study_run, runs_of):
    parent = study_run["parent"]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[names.ENTRY_TAG] == "tune"
    assert parent.data.tags[names.STUDY_TAG] == "tiny"
    assert parent.info.run_name == "tune-tiny"
    children = _children(runs_of, study_run)
    by_trial = {}
    for run in children:
        assert run.data.tags[PARENT] == parent.info.run_id
        assert run.data.tags[names.STUDY_TAG] == "tiny"
        assert run.info.status == "FINISHED"
        entry = run.data.tags[names.ENTRY_TAG]
        assert run.info.run_name == f"trial-{run.data.tags[names.TRIAL_TAG]}-{entry}"
        by_trial.setdefault(run.data.tags[names.TRIAL_TAG], []).append(
            run.data.tags[names.ENTRY_TAG]
        )
    assert {k: sorted(v) for k, v in by_trial.items()} == {
        str(n): ["pretrain", "probe"] for n in range(3)
    }
    for trial in study_run["trials"]:
        ids = {
            run.info.run_id
            for run in children
            if run.data.tags[names.TRIAL_TAG] == str(trial.number)
        }
        assert ids == {trial.user_attrs[PRETRAIN_RUN], trial.user_attrs[PROBE_RUN]}
    # no tune run other than the parent, and no run outside it
    everything = runs_of(study_run["tracking"].experiment)
    assert len(everything) == 1 + len(children)


def test_parent_logs_best_trial_table_and_plots(study_run, tmp_path):
    result, parent = study_run["result"], study_run["parent"]
    study = result.study
    metrics = parent.data.metrics
    assert metrics["best/val_accuracy"] == pytest.approx(study.best_value)
    assert metrics["best/temperature"] == pytest.approx(study.best_params["temperature"])
    assert metrics["best/trial"] == study.best_trial.number
    assert metrics["study/complete"] == 3
    assert parent.data.tags["eibacl.best_trial"] == str(study.best_trial.number)
    assert parent.data.params["n_trials"] == "3"
    client = MlflowClient()
    root = client.list_artifacts(parent.info.run_id)
    names = {a.path for a in root} | {
        a.path for a in client.list_artifacts(parent.info.run_id, "plots")
    }
    assert {
        "trials.csv",
        "plots/optimization_history.png",
        "plots/intermediate_values.png",
    } <= names
    path = mlflow.artifacts.download_artifacts(
        run_id=parent.info.run_id, artifact_path="trials.csv", dst_path=str(tmp_path)
    )
    rows = list(csv.DictReader(io.StringIO(open(path).read())))
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    assert {r["state"] for r in rows} == {"COMPLETE"}
    values = [float(r["value_val_accuracy"]) for r in rows]
    assert values == pytest.approx([t.value for t in study_run["trials"]])
    if "plots/param_importances.png" not in names:  # identical values: a note instead
        skipped = mlflow.artifacts.download_artifacts(
            run_id=parent.info.run_id, artifact_path="plots/skipped.json", dst_path=str(tmp_path)
        )
        assert "plots/param_importances.png" in json.loads(open(skipped).read())


def test_best_encoder_is_registered_as_champion(study_run):
    registration = study_run["result"].registration
    model = study_run["tracking"].model
    assert registration is not None and registration.champion
    client = MlflowClient()
    champion = client.get_model_version_by_alias(model, tracking.CHAMPION)
    assert str(champion.version) == registration.version
    best = study_run["result"].study.best_trial
    assert champion.run_id == best.user_attrs[PRETRAIN_RUN]
    assert champion.tags[names.STUDY_TAG] == "tiny" and champion.tags[names.TRIAL_TAG] == str(
        best.number
    )
    assert float(champion.tags["val/accuracy"]) == pytest.approx(best.value)
    assert study_run["parent"].data.tags["eibacl.model_version"] == registration.version


def test_continued_study_keeps_its_parent_run_and_prunes_a_weak_trial(
    study_run, tiny_tune, runs_of
):
    """Four earlier trials whose kNN accuracy was perfect at every epoch: the median is
    1.0, so the next trial is stopped after its first epoch, before any probe."""
    config, result = study_run["config"], study_run["result"]
    study = result.study
    for _ in range(4):
        study.add_trial(
            optuna.trial.create_trial(
                params={"temperature": 0.1},
                distributions={"temperature": FloatDistribution(0.03, 0.5, log=True)},
                value=0.0,
                intermediate_values={1: 1.0, 2: 1.0},
            )
        )
    again = tune(
        tiny_tune(storage=config.storage, study_name="tiny", n_trials=1, seed=1, pruner="median")
    )
    assert again.parent_run_id == result.parent_run_id
    trial = again.study.get_trials()[-1]
    assert trial.number == 7 and trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]
    pruned_run = MlflowClient().get_run(trial.user_attrs[PRETRAIN_RUN])
    assert pruned_run.data.tags[names.TRIAL_STATE_TAG] == "PRUNED"
    assert pruned_run.info.status == "KILLED"
    assert pruned_run.data.tags[PARENT] == result.parent_run_id
    probes = runs_of(
        study_run["tracking"].experiment,
        f"tags.`{names.TRIAL_TAG}` = '7' and tags.`{names.ENTRY_TAG}` = 'probe'",
    )
    assert probes == []
    parent = MlflowClient().get_run(result.parent_run_id)
    assert parent.data.metrics["study/pruned"] == 1
    assert again.best_trial.number == result.best_trial.number  # still the real best
    assert again.registration is None  # that encoder is registered already
