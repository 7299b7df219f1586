"""`pretrain` and `baseline` under DistributedDataParallel with 2 gloo processes: one MLflow
run each (rank 0 logs), each step logged once, a checkpoint and a logged model; an
interrupted run resumes to the same losses as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests import tiny
from tests.distributed.dist_helpers import cli_args, spawn, torchrun
from tests.distributed.dist_workers import training_worker

if not torch.distributed.is_gloo_available():  # pragma: no cover
    pytest.skip("torch was built without the gloo backend", allow_module_level=True)

TINY = tiny.pretrain_settings()


def runs_of(experiment: str) -> list:
    exp = mlflow.get_experiment_by_name(experiment)
    return MlflowClient().search_runs([exp.experiment_id], max_results=100)


def steps(run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in MlflowClient().get_metric_history(run_id, key))


def history(run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(MlflowClient().get_metric_history(run_id, key), key=_step)]


def _step(metric) -> int:
    return metric.step


def test_torchrun_pretrain_makes_one_run_with_each_step_once(
    fresh_experiment, isolated_environment, tmp_path: Path
):
    torchrun(
        "entrypoints/pretrain.py",
        cli_args(TINY),
        {"MLFLOW_EXPERIMENT_NAME": fresh_experiment, **isolated_environment},
        cwd=tmp_path,
        experiment=fresh_experiment,  # a gloo start-up abort is retried once
    )
    (run,) = runs_of(fresh_experiment)
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "2"
    for key in ("train/loss", "train/lr", "train/images_per_s", "val/knn_accuracy"):
        assert steps(run.info.run_id, key) == [1, 2], key
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "checkpoints")}
    assert artifacts == {"checkpoints/last.pt"}
    model_uri = run.data.tags["eibacl.encoder_uri"]
    model = mlflow.get_logged_model(model_uri.removeprefix("models:/"))
    assert model.source_run_id == run.info.run_id
    assert not (tmp_path / "mlruns").exists()  # artifacts went to the experiment's folder


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, mlflow_home: Path, make_experiment, noise_far_ood) -> dict:
    """The runs of `training_worker` (2 processes), in an experiment of their own."""
    import uuid

    name = f"ddp-{uuid.uuid4().hex[:8]}"
    make_experiment(name)
    out = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_EXPERIMENT_NAME", name)
        spawn(training_worker, 2, str(out), TINY, noise_far_ood, timeout=300, experiment=name)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
    return {"experiment": name, "ranks": ranks}


def test_only_rank_0_logs_and_every_rank_knows_its_run_id(ddp_runs):
    runs = runs_of(ddp_runs["experiment"])
    assert len(runs) == 3  # reference, interrupted-then-resumed, baseline: no rank-1 runs
    assert all(run.info.status == "FINISHED" for run in runs)
    rank0, rank1 = ddp_runs["ranks"]
    for key in ("reference", "resumed", "baseline"):
        assert rank0[key][0] == rank1[key][0], key
    assert rank0["resumed"][3] == rank1["resumed"][3] != ""  # the model URI, broadcast


def test_resumed_ddp_run_equals_an_uninterrupted_one(ddp_runs):
    reference_id = ddp_runs["ranks"][0]["reference"][0]
    killed_id, resumed_id, metrics, model_uri = ddp_runs["ranks"][0]["resumed"]
    assert killed_id is not None and resumed_id == killed_id
    assert steps(resumed_id, "train/loss") == [1, 2, 3]
    assert steps(resumed_id, "val/knn_accuracy") == [1, 2, 3]
    assert history(resumed_id, "train/loss") == pytest.approx(
        history(reference_id, "train/loss"), abs=1e-6, rel=0
    )
    assert history(resumed_id, "val/knn_accuracy") == history(reference_id, "val/knn_accuracy")
    # both ranks end with rank 0's validation metrics (broadcast)
    assert ddp_runs["ranks"][1]["resumed"][2] == metrics
    assert mlflow.get_logged_model(model_uri.removeprefix("models:/")).source_run_id == resumed_id


def test_ddp_baseline_is_evaluated_once_on_rank_0(ddp_runs):
    run_id, metrics = ddp_runs["ranks"][0]["baseline"]
    run = MlflowClient().get_run(run_id)
    assert run.data.tags["eibacl.method"] == "ce"
    assert "test/accuracy" in run.data.metrics and "test/accuracy" in metrics
    assert steps(run_id, "train/loss") == [1, 2]
    assert "test/accuracy" not in ddp_runs["ranks"][1]["baseline"][1]  # rank 1 did not evaluate
