"""`probe` on the tiny pretrain run: metric names, plots, summaries, what the linear probe
is trained on, the registry champion, and the errors a user can run into."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from eibacl import names, tracking
from eibacl.config import ProbeConfig
from eibacl.data.sources import load_source
from eibacl.evaluate.features import extract_features
from eibacl.evaluate.probe import probe
from eibacl.paths import cache_dir

SCORERS = ("knn", "mahalanobis", "msp", "energy")
OOD_SETS = ("near", "far")
OOD_METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out")
PLOTS = (
    "plots/confusion_matrix.png",
    "plots/roc_near.png",
    "plots/roc_far.png",
    "plots/scores_knn.png",
    "plots/embedding.png",
)


@pytest.fixture(scope="module")
def probe_run(tiny_probe):
    return MlflowClient().get_run(tiny_probe.result.run_id)


def test_empty_encoder_uri_probes_the_newest_finished_pretrain_run(tiny_probe, probe_run):
    assert probe_run.info.status == "FINISHED"
    assert probe_run.data.tags["eibacl.pretrain_run"] == tiny_probe.run.run_id
    assert probe_run.data.tags["eibacl.encoder_uri"] == tiny_probe.run.result.model_uri
    assert probe_run.data.tags[names.ENTRY_TAG] == "probe"
    assert probe_run.data.tags[names.METHOD_TAG] == "supcon"
    assert probe_run.data.params["pretrain_run"] == tiny_probe.run.run_id
    assert probe_run.data.params["shots"] == str(tiny_probe.run.config.shots)


def test_metrics_have_the_documented_names_and_lie_in_unit_interval(probe_run):
    metrics = probe_run.data.metrics
    expected = {"val/accuracy", "test/accuracy"}
    expected |= {
        f"ood/{ood}/{scorer}/{m}" for ood in OOD_SETS for scorer in SCORERS for m in OOD_METRICS
    }
    expected |= {f"val/ood/near/{scorer}/auroc" for scorer in SCORERS}
    missing = expected - set(metrics)
    assert not missing, sorted(missing)
    for key in expected:
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
    per_class = [k for k in metrics if k.startswith("test/accuracy/")]
    assert len(per_class) == 5  # one per in-distribution class (10 - 3 ood - 2 ood_val)
    # Fashion-MNIST has no object ids: CIs resample images, no object-level metrics.
    assert 0.0 < metrics["ci_halfwidth/ood/near/mahalanobis/auroc"] < 0.5
    assert 0.0 < metrics["ci_halfwidth/test/accuracy"] < 0.5
    assert not [k for k in metrics if "object" in k]
    assert metrics["data/images/near_ood"] > 0 and "data/objects/test" not in metrics
    assert "test/accuracy/T-shirt_top" in metrics  # '/' in a class name is made metric-safe


def test_evaluation_metrics_are_linked_to_the_logged_encoder(probe_run):
    """MLflow 3: the encoder's logged model carries the probe's metrics (Models tab)."""
    uri = probe_run.data.tags["eibacl.encoder_uri"]
    assert uri.startswith("models:/m-")
    model = mlflow.get_logged_model(tracking.model_id_of(uri))
    linked = {m.key: m.value for m in model.metrics if m.run_id == probe_run.info.run_id}
    assert linked["val/accuracy"] == probe_run.data.metrics["val/accuracy"]
    assert "ood/near/knn/aupr_out" in linked
    # ...each with the split side it was measured on (val/*, test/*), ood/* on none
    datasets = {m.key: m.dataset_name for m in model.metrics if m.run_id == probe_run.info.run_id}
    assert datasets["val/accuracy"].endswith("-val"), datasets["val/accuracy"]
    assert datasets["test/accuracy"].endswith("-test"), datasets["test/accuracy"]
    assert not datasets["ood/near/knn/auroc"]
    inputs = {d.dataset.name for d in probe_run.inputs.dataset_inputs}
    assert {datasets["val/accuracy"], datasets["test/accuracy"]} <= inputs


def test_plots_and_summaries_are_logged(probe_run, tiny_probe):
    client = MlflowClient()
    run_id = probe_run.info.run_id
    plots = {f.path for f in client.list_artifacts(run_id, "plots")}
    assert set(PLOTS) <= plots
    root = {f.path for f in client.list_artifacts(run_id)}
    assert {"summary.json", "summary.md", "split.json"} <= root
    summary = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/summary.json"))
    assert summary["test/accuracy"] == pytest.approx(probe_run.data.metrics["test/accuracy"])
    assert "test/accuracy" in mlflow.artifacts.load_text(f"runs:/{run_id}/summary.md")


def test_linear_probe_sees_exactly_the_training_split(tiny_probe):
    """Never the test or held-out images: the features given to the probe are those of the
    split's train images, in order, with their labels."""
    (inputs,) = tiny_probe.probe_inputs
    run = tiny_probe.run
    split = json.loads(mlflow.artifacts.load_text(f"runs:/{run.run_id}/split.json"))
    assert len(inputs["train_f"]) == len(inputs["train_y"]) == len(split["train"])
    assert len(inputs["val_y"]) == len(split["val"])
    config = run.config
    imageset = load_source(config.data, config.image_size, cache_dir())
    where = imageset.index_of()
    idx = torch.tensor([where[i] for i in split["train"]])
    encoder = tracking.load_encoder(run.result.model_uri)
    expected = extract_features(encoder, imageset.images[idx])
    assert torch.allclose(inputs["train_f"], expected, atol=1e-5)
    names = [imageset.class_names[int(y)] for y in imageset.labels[idx]]
    assert [split["id_classes"][int(y)] for y in inputs["train_y"]] == names
    # and not, say, the test images of the same classes
    test_idx = torch.tensor([where[i] for i in split["test"][: len(idx)]])
    other = extract_features(encoder, imageset.images[test_idx])
    assert not torch.allclose(inputs["train_f"][: len(other)], other, atol=1e-3)


def test_champion_alias_loads_and_embeds(tiny_probe):
    registration = tiny_probe.result.registration
    assert registration is not None
    client = MlflowClient()
    version = client.get_model_version(tracking.REGISTERED_MODEL, registration.version)
    assert version.run_id == tiny_probe.run.run_id
    val_accuracy = tiny_probe.result.evaluation.metrics["val/accuracy"]
    assert version.tags["val/accuracy"] == str(val_accuracy)
    assert probe_tags_name_no_test_metric(version.tags)
    # other tests of the session may register better encoders: read the champion's own sizes
    champion = client.get_model_version_by_alias(tracking.REGISTERED_MODEL, tracking.CHAMPION)
    assert float(champion.tags["val/accuracy"]) >= val_accuracy
    params = client.get_run(champion.run_id).data.params
    size, width = int(float(params["image_size"])), int(float(params["width"]))
    encoder = tracking.load_encoder(f"models:/{tracking.REGISTERED_MODEL}@champion")
    with torch.inference_mode():
        features = encoder(torch.rand(3, 1, size, size))
    assert features.shape == (3, 4 * width)


def probe_tags_name_no_test_metric(tags: dict[str, str]) -> bool:
    return not any(key.startswith(("test/", "ood/")) for key in tags)


def test_knn_k_larger_than_training_set_names_knn_k(tiny_pretrain_run, fresh_experiment):
    uri = f"runs:/{tiny_pretrain_run.run_id}/encoder"
    with pytest.raises(ValueError, match="knn_k=100000"):
        probe(ProbeConfig(encoder_uri=uri, knn_k=100_000, device="cpu", register=False))


def test_probing_a_pretrain_run_without_encoder_is_a_clear_error(fresh_experiment):
    with mlflow.start_run(
        experiment_id=tracking.experiment_id(), tags={names.ENTRY_TAG: "pretrain"}
    ) as run:
        pass
    run_id = run.info.run_id
    with pytest.raises(ValueError, match=f"{run_id} has no logged encoder"):
        probe(ProbeConfig(device="cpu"))  # the newest finished pretrain run
    with pytest.raises(ValueError, match=f"{run_id} has no logged encoder"):
        probe(ProbeConfig(encoder_uri=f"runs:/{run_id}", device="cpu"))
    with pytest.raises(ValueError, match=run_id):
        probe(ProbeConfig(encoder_uri=f"runs:/{run_id}/encoder", device="cpu"))


def test_no_finished_pretrain_run_is_a_clear_error(fresh_experiment):
    with pytest.raises(ValueError, match="no finished pretrain run"):
        probe(ProbeConfig(device="cpu"))


@pytest.mark.parametrize(
    "uri",
    [
        "garbage",
        "s3://bucket/encoder",
        "runs:/0123456789abcdef0123456789abcdef/encoder",
        "models:/no-such-model@champion",
        "models:/no-such-model/3",
    ],
)
def test_bad_encoder_uri_is_a_value_error(uri, fresh_experiment):
    with pytest.raises(ValueError, match="encoder_uri|not found|not in the registry"):
        probe(ProbeConfig(encoder_uri=uri, device="cpu"))


def test_newest_finished_run_skips_unfinished_and_other_entry_points(
    tiny_pretrain_run, fresh_experiment
):
    import time

    encoder_uri = tiny_pretrain_run.result.model_uri
    exp = tracking.experiment_id()

    def make_run(entry: str, status: str) -> str:
        tags = {names.ENTRY_TAG: entry, "eibacl.encoder_uri": encoder_uri}
        with mlflow.start_run(experiment_id=exp, tags=tags) as run:
            pass
        MlflowClient().set_terminated(run.info.run_id, status)
        time.sleep(0.02)  # start times are in milliseconds
        return run.info.run_id

    older = make_run("pretrain", "FINISHED")
    make_run("pretrain", "FAILED")
    make_run("baseline", "FINISHED")
    assert tracking.resolve_encoder("") == (encoder_uri, older)
    newer = make_run("pretrain", "FINISHED")
    assert tracking.resolve_encoder("") == (encoder_uri, newer)


def test_ood_sets_are_dataset_inputs(probe_run):
    """The held-out classes' test and validation images and the far-OOD set, as inputs."""
    by_context = {
        {t.key: t.value for t in d.tags}["mlflow.data.context"]: d
        for d in probe_run.inputs.dataset_inputs
    }
    assert {"near-ood-test", "near-ood-validation", "far-ood"} <= set(by_context)
    far = by_context["far-ood"]
    assert far.dataset.name.endswith("-far-ood")
    assert int({t.key: t.value for t in far.tags}["size"]) > 0
