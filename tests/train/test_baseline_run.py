"""`baseline`: one cross-entropy run, evaluated under the probe's metric names, so a SupCon
probe run and a CE baseline run compare column by column in the MLflow UI."""

from __future__ import annotations

import uuid

import pytest
from mlflow.tracking import MlflowClient

from eibacl import names, tracking
from eibacl.train.baseline import baseline
from tests import tiny

COMPARED_PREFIXES = ("test/", "val/", "ood/")


@pytest.fixture(scope="module")
def baseline_run(make_experiment):
    """A tiny baseline run in an experiment, and a registered model, of its own."""
    name = f"tiny-baseline-{uuid.uuid4().hex[:8]}"
    make_experiment(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_EXPERIMENT_NAME", name)
        mp.setattr(tracking, "REGISTERED_MODEL", f"eibacl-encoder-{name}")
        result = baseline(tiny.baseline_config())
        runs = tracking.find_runs("")
    return result, runs


def test_baseline_is_one_finished_ce_run(baseline_run):
    result, runs = baseline_run
    assert [r.info.run_id for r in runs] == [result.run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags[names.METHOD_TAG] == "ce"
    assert run.data.tags[names.ENTRY_TAG] == "baseline"
    assert run.data.tags["eibacl.model_version"]
    assert "eibacl.encoder_uri" in run.data.tags


def test_baseline_logs_train_metrics_and_the_probe_metric_names(baseline_run):
    result, _ = baseline_run
    metrics = MlflowClient().get_run(result.run_id).data.metrics
    for key in ("train/loss", "train/lr", "train/images_per_s", "val/knn_accuracy"):
        assert key in metrics, key
    for key in ("val/accuracy", "test/accuracy", "ood/near/knn/auroc", "ood/far/energy/fpr95"):
        assert 0.0 <= metrics[key] <= 1.0, key
    steps = [m.step for m in MlflowClient().get_metric_history(result.run_id, "train/loss")]
    assert sorted(steps) == [1, 2]
    client = MlflowClient()
    plots = {f.path for f in client.list_artifacts(result.run_id, "plots")}
    assert "plots/confusion_matrix.png" in plots
    assert "summary.json" in {f.path for f in client.list_artifacts(result.run_id)}


def test_supcon_probe_and_ce_baseline_share_their_evaluation_columns(baseline_run, tiny_probe):
    result, _ = baseline_run
    client = MlflowClient()
    ce = client.get_run(result.run_id).data.metrics
    supcon = client.get_run(tiny_probe.result.run_id).data.metrics

    def columns(metrics: dict[str, float]) -> set[str]:
        return {k for k in metrics if k.startswith(COMPARED_PREFIXES)}

    assert columns(ce) == columns(supcon), columns(ce) ^ columns(supcon)
    assert len(columns(ce)) > 30
