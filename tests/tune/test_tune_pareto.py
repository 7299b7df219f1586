"""Two objectives (validation accuracy and validation near-OOD AUROC) with synthetic data:
the first trial generates the set for its strength, the second reuses it; the parent run
shows the Pareto front and the registry gets the Pareto trial with the best accuracy."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from eibacl import names
from eibacl.evaluate.evaluation import SELECTION_NEAR_OOD
from eibacl.tune import tune
from eibacl.tune.objective import PRETRAIN_RUN, PROBE_RUN

SET_DIR = "eibacl.synthetic_set_dir"
PARENT = "mlflow.parentRunId"


@pytest.fixture(scope="module")
def pareto_run(own_tracking, tiny_tune, tiny_generator, tmp_path_factory):
    storage = f"sqlite:///{tmp_path_factory.mktemp('optuna') / 'optuna.db'}"
    config = tiny_tune(
        storage=storage,
        study_name="pareto",
        objective="val_accuracy+near_ood_auroc",
        search="temperature,strength",
        strength_grid="0.5",  # one value: one synthetic set for every trial
        generator_seed=7919,  # a generation key no other test makes
        n_trials=2,
        **tiny_generator,
    )
    result = tune(config)
    client = MlflowClient()
    trials = result.study.get_trials()
    return {
        "result": result,
        "tracking": own_tracking,
        "trials": trials,
        "parent": client.get_run(result.parent_run_id),
        "pretrain": [client.get_run(t.user_attrs[PRETRAIN_RUN]) for t in trials],
        "probe": [client.get_run(t.user_attrs[PROBE_RUN]) for t in trials],
    }


def test_trials_return_validation_accuracy_and_validation_near_ood_auroc(pareto_run):
    trials = pareto_run["trials"]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for trial, probe_run in zip(trials, pareto_run["probe"]):
        metrics = probe_run.data.metrics
        assert trial.values == pytest.approx([metrics["val/accuracy"], metrics[SELECTION_NEAR_OOD]])
        assert trial.params["strength"] == 0.5
        assert trial.intermediate_values == {}  # no pruning with two objectives


def test_second_trial_reuses_the_synthetic_set_the_first_generated(pareto_run, runs_of):
    first, second = pareto_run["pretrain"]
    assert first.data.tags[SET_DIR] and first.data.tags[SET_DIR] == second.data.tags[SET_DIR]
    assert first.data.params["strength"] == second.data.params["strength"] == "0.5"
    generate_runs = runs_of(
        pareto_run["tracking"].experiment, f"tags.`{names.ENTRY_TAG}` = 'generate'"
    )
    assert len(generate_runs) == 1
    (generate_run,) = generate_runs
    assert generate_run.data.tags[PARENT] == first.info.run_id  # made inside trial 0
    assert generate_run.data.tags[SET_DIR] == first.data.tags[SET_DIR]
    for run in pareto_run["pretrain"] + pareto_run["probe"]:
        assert run.data.tags[PARENT] == pareto_run["parent"].info.run_id


def test_parent_shows_the_pareto_front_and_the_selected_trial(pareto_run):
    parent = pareto_run["parent"]
    client = MlflowClient()
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {
        "plots/pareto_front.png",
        "plots/optimization_history_val_accuracy.png",
        "plots/optimization_history_near_ood_auroc.png",
    } <= plots
    study = pareto_run["result"].study
    chosen = max(study.best_trials, key=lambda t: (t.values[0], t.values[1]))
    assert pareto_run["result"].best_trial.number == chosen.number
    metrics = parent.data.metrics
    assert metrics["best/val_accuracy"] == pytest.approx(chosen.values[0])
    assert metrics["best/near_ood_auroc"] == pytest.approx(chosen.values[1])
    assert metrics["study/pareto_size"] == len(study.best_trials)


def test_the_selected_pareto_trial_is_registered(pareto_run):
    registration = pareto_run["result"].registration
    assert registration is not None and registration.champion
    version = MlflowClient().get_model_version(pareto_run["tracking"].model, registration.version)
    best = pareto_run["result"].best_trial
    assert version.run_id == best.user_attrs[PRETRAIN_RUN]
    assert version.tags[names.TRIAL_TAG] == str(best.number)
    assert version.tags[names.SYNTHETIC_TAG] == "positives+negatives"
