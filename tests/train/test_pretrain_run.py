"""`pretrain` end to end on a tiny configuration: what the MLflow run holds, and determinism."""

from __future__ import annotations

import dataclasses
import json

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from eibacl import names, tracking
from eibacl.data.sources import load_source
from eibacl.data.splits import make_split
from eibacl.paths import cache_dir
from eibacl.train.checkpoint import load_checkpoint

TRAIN_METRICS = ("train/loss", "train/lr", "train/images_per_s")


@pytest.fixture(scope="module")
def run(tiny_pretrain_run):
    return MlflowClient().get_run(tiny_pretrain_run.run_id)


def test_run_finished_with_method_and_entry_point_tags(run):
    assert run.info.status == "FINISHED"
    assert run.data.tags[names.METHOD_TAG] == "supcon"
    assert run.data.tags[names.ENTRY_TAG] == "pretrain"
    assert run.data.tags[names.SYNTHETIC_TAG] == "none"


def test_every_parameter_is_logged_with_its_value(run, tiny_pretrain_run):
    config = dataclasses.asdict(tiny_pretrain_run.config)
    assert set(config) <= set(run.data.params)
    for name, value in config.items():
        assert run.data.params[name] == str(value), name


def test_epoch_metrics_are_logged_once_per_epoch(run, tiny_pretrain_run):
    client = MlflowClient()
    epochs = tiny_pretrain_run.config.epochs
    for key in TRAIN_METRICS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == list(range(1, epochs + 1)), key
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert all(torch.isfinite(torch.tensor(m.value)) and m.value > 0 for m in loss)
    knn = client.get_metric_history(run.info.run_id, "val/knn_accuracy")
    assert epochs in {m.step for m in knn}
    assert all(0.0 <= m.value <= 1.0 for m in knn)
    # the returned metrics are those of the last epoch
    last = {m.step: m.value for m in loss}[epochs]
    assert tiny_pretrain_run.result.metrics["train/loss"] == pytest.approx(last)


def test_split_artifact_matches_make_split_and_keeps_held_out_classes_out(run, tiny_pretrain_run):
    config = tiny_pretrain_run.config
    logged = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/split.json"))
    imageset = load_source(config.data, config.image_size, cache_dir(), config.skip_corrupt)
    expected = make_split(imageset, config)
    for side in ("train", "val", "test", "ood_val", "ood_test"):
        assert logged[side] == expected.side(side), side
    assert logged["ood_classes"] == ["Pullover", "Shirt", "Ankle boot"]
    assert len(logged["train"]) == config.shots * len(logged["id_classes"])
    where = imageset.index_of()
    for side in ("train", "val", "test"):
        names = {imageset.class_names[int(imageset.labels[where[i]])] for i in logged[side]}
        assert names == set(logged["id_classes"]), side
        assert not names & set(logged["ood_classes"]), side
    groups = {"ood_val": logged["ood_val_classes"], "ood_test": logged["ood_classes"]}
    assert groups["ood_val"] == ["Coat", "Sandal"]  # selection never sees a reported class
    for side, classes in groups.items():
        names = {imageset.class_names[int(imageset.labels[where[i]])] for i in logged[side]}
        assert names == set(classes), side
        assert not names & set(logged["id_classes"]), side
    all_id = set(logged["train"]) | set(logged["val"]) | set(logged["test"])
    assert len(all_id) == len(logged["train"]) + len(logged["val"]) + len(logged["test"])


def test_checkpoint_artifact_holds_the_last_epoch(run, tiny_pretrain_run, tmp_path):
    path = tracking.download(run.info.run_id, "checkpoints/last.pt", tmp_path)
    state = load_checkpoint(path)
    assert state["epoch"] == tiny_pretrain_run.config.epochs
    assert {"network", "optimizer", "scheduler", "sampler", "augment", "torch_rng"} <= set(state)
    assert state["config"] == dataclasses.asdict(tiny_pretrain_run.config)


def test_dataset_inputs_are_recorded(run):
    inputs = MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    assert inputs
    contexts = {tag.value for d in inputs for tag in d.tags if tag.key == "mlflow.data.context"}
    assert {"training", "validation", "test"} <= contexts


def test_logged_encoder_loads_and_embeds(run, tiny_pretrain_run):
    uri = run.data.tags["eibacl.encoder_uri"]
    assert uri == tiny_pretrain_run.result.model_uri
    encoder = tracking.load_encoder(uri)
    size = tiny_pretrain_run.config.image_size
    x = torch.rand(5, 1, size, size)
    with torch.inference_mode():
        features = encoder(x)
    assert features.shape == (5, 4 * tiny_pretrain_run.config.width)
    assert torch.isfinite(features).all()
    # the logged model is the trained encoder (eval mode), not a fresh one
    trained = tiny_pretrain_run.result.encoder.cpu().eval()
    with torch.inference_mode():
        assert torch.allclose(features, trained(x), atol=1e-5)


def _final_loss(run_id: str) -> float:
    history = MlflowClient().get_metric_history(run_id, "train/loss")
    return max(history, key=lambda m: m.step).value


@pytest.fixture
def no_model_logging(monkeypatch):
    """Skip logging the encoder (seconds per run) where a test only reads metrics."""
    monkeypatch.setattr(tracking, "log_encoder", lambda encoder, name="encoder": "skipped")


def test_same_seed_gives_identical_loss_and_other_seed_differs(
    tiny_pretrain_run, fresh_experiment, no_model_logging
):
    from eibacl.config import replace
    from eibacl.train.pretrain import pretrain

    reference = tiny_pretrain_run.result.metrics["train/loss"]
    again = pretrain(tiny_pretrain_run.config)
    other = pretrain(replace(tiny_pretrain_run.config, seed=1))
    assert again.run_id != tiny_pretrain_run.run_id
    assert again.metrics["train/loss"] == reference
    assert _final_loss(again.run_id) == _final_loss(tiny_pretrain_run.run_id)
    assert other.metrics["train/loss"] != reference


def test_a_torchvision_backbone_trains_and_is_logged_end_to_end(fresh_experiment):
    """encoder=mobilenet_v3_small (any torchvision classifier by name) at 32 px, 1 epoch:
    the run finishes and its logged encoder gives the 1024 features before the classifier."""
    from eibacl.train.pretrain import pretrain
    from tests import tiny

    result = pretrain(tiny.pretrain_config(encoder="mobilenet_v3_small", image_size=32, epochs=1))
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.params["encoder"] == "mobilenet_v3_small"
    assert torch.isfinite(torch.tensor(result.metrics["train/loss"]))
    logged = tracking.load_encoder(run.data.tags[names.ENCODER_URI_TAG])
    with torch.no_grad():
        features = logged(torch.rand(3, 1, 32, 32))
    assert features.shape == (3, 1024)


def test_system_metrics_setting_reaches_the_mlflow_run(fresh_experiment, monkeypatch):
    """system_metrics=true starts the run with MLflow's system-metrics monitor (the flag
    is recorded, then dropped: psutil may be absent where the tests run)."""
    from eibacl.train.pretrain import pretrain
    from tests import tiny

    monkeypatch.setattr(tracking, "log_encoder", lambda encoder, name="encoder": "skipped")
    monkeypatch.setattr(
        tracking, "system_metrics_wanted", lambda setting, device: setting == "true"
    )
    seen = []
    real_start_run = mlflow.start_run

    def start_run(*args, log_system_metrics=None, **kwargs):
        seen.append(log_system_metrics)
        return real_start_run(*args, log_system_metrics=False, **kwargs)

    monkeypatch.setattr(mlflow, "start_run", start_run)
    pretrain(tiny.pretrain_config(epochs=1, system_metrics="true"))
    pretrain(tiny.pretrain_config(epochs=1, system_metrics="false"))
    assert seen == [True, False]


def test_system_metrics_are_logged_into_the_run(fresh_experiment, monkeypatch):
    """With psutil installed: the run holds MLflow's system/* metrics."""
    pytest.importorskip("psutil")
    from mlflow.system_metrics import set_system_metrics_sampling_interval

    from eibacl.train.pretrain import pretrain
    from tests import tiny

    monkeypatch.setattr(tracking, "log_encoder", lambda encoder, name="encoder": "skipped")
    set_system_metrics_sampling_interval(0.2)
    try:
        result = pretrain(tiny.pretrain_config(epochs=2, system_metrics="true"))
    finally:
        set_system_metrics_sampling_interval(None)
    metrics = MlflowClient().get_run(result.run_id).data.metrics
    assert any(key.startswith("system/cpu_utilization") for key in metrics), sorted(metrics)
