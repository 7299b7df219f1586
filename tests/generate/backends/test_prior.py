"""The diffusion prior: the `prior` run at its defaults (sizes shrunk), training that resumes
exactly, and every bad prior refused in one line."""

from __future__ import annotations

import json

import pytest
import torch
from mlflow.tracking import MlflowClient

from eibacl.config import ConfigError, PriorConfig
from eibacl.generate.backends import ddpm_training
from eibacl.generate.backends.ddpm import DDPMBackend
from eibacl.generate.backends.ddpm_prior import (
    PriorError,
    PriorSettings,
    check_fits,
    fit_pseudo_classes,
    load_prior,
)
from eibacl.generate.prior_run import run_prior
from tests.generate.conftest import TINY_PRIOR


def test_prior_run_logs_and_writes_a_loadable_prior(tiny_prior, fresh_experiment):
    result, out = tiny_prior
    prior = load_prior(out)
    assert prior.backend.config.num_classes == 4 and prior.backend.trained_steps == 3
    assert prior.info["pool"]["size"] > 20_000  # Fashion-MNIST's ID train images off the split
    assert set(prior.info["pool"]["classes"]) == {
        "T-shirt/top",
        "Trouser",
        "Dress",
        "Sneaker",
        "Bag",
    }
    assert set(prior.info["excluded_classes"]) >= {"Pullover", "Shirt", "Ankle boot"}
    assert prior.info["run_id"] == result.run_id
    card = prior.card.read_text()
    assert "Trouser" in card and "Pullover" in card and "mlflow run . -e prior" in card
    run = MlflowClient().get_run(result.run_id)
    assert run.data.params["prior_pool_digest"] == prior.info["pool"]["digest"]
    assert run.data.metrics["prior/steps"] == 3
    assert 0.0 <= run.data.metrics["prior/judge/memorised_rate"] <= 1.0
    assert 0.0 <= run.data.metrics["prior/judge/auroc_real_vs_samples"] <= 1.0
    logged = {f.path for f in MlflowClient().list_artifacts(result.run_id, "samples")}
    assert logged == {"samples/prior_samples.png", "samples/closest_pairs.png"}
    files = {f.path for f in MlflowClient().list_artifacts(result.run_id, "prior")}
    assert "prior/CARD.md" in files and "prior/model.safetensors" in files


def _toy(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=gen), torch.arange(
        n
    ) % 2


def _backend(steps: int) -> DDPMBackend:
    small = dict(block_out_channels=(8, 16), norm_num_groups=4, attention=False, batch_size=8)
    return DDPMBackend(8, 1, 2, train_steps=steps, **small)


def test_training_resumed_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    images, labels = _toy()
    whole = _backend(6)
    whole.fit(images, labels, ["a", "b"], progress=False)
    real_step, calls = ddpm_training._step, []

    def dies_at_the_fifth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # as a kill after the checkpoint of step 4
        return real_step(*args, **kwargs)

    monkeypatch.setattr(ddpm_training, "_step", dies_at_the_fifth)
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        _backend(6).fit(
            images, labels, ["a", "b"], progress=False, checkpoint=ckpt, checkpoint_every=2
        )
    monkeypatch.setattr(ddpm_training, "_step", real_step)
    resumed = _backend(6)
    resumed.fit(images, labels, ["a", "b"], progress=False, checkpoint=ckpt, checkpoint_every=2)
    assert resumed.trained_steps == 6
    assert resumed.loss_history == whole.loss_history
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_pseudo_classes_assign_the_pool_as_kmeans_did():
    images, _ = _toy(40)
    pseudo = fit_pseudo_classes(images, 3, 5, seed=0)
    from sklearn.cluster import KMeans

    projected = pseudo.project(images).numpy()
    reference = KMeans(n_clusters=3, init=pseudo.centroids.numpy(), n_init=1, max_iter=1)
    assert (pseudo.assign(images).numpy() == reference.fit(projected).labels_).all()


def test_an_empty_pool_is_refused():
    with pytest.raises(ConfigError, match="prior_pool=none gives no images"):
        run_prior(PriorConfig(**TINY_PRIOR, prior_pool="none"))


def test_missing_or_corrupt_prior_files_name_the_path_and_the_retrain_command(tiny_prior, tmp_path):
    _, out = tiny_prior
    with pytest.raises(PriorError, match=r"prior\.json is missing.*mlflow run \. -e prior"):
        load_prior(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in out.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PriorError, match=r"cannot be read.*-e prior -P prior_out="):
        load_prior(broken)


def test_a_prior_of_another_size_or_holding_a_held_out_class_is_refused(tiny_prior):
    prior = load_prior(tiny_prior[1])
    with pytest.raises(ValueError, match=r"1-channel 16 px.*3-channel 32 px.*generator_size"):
        check_fits(prior, 32, 3, [])
    with pytest.raises(
        ValueError, match=r"holds 'Trouser', a class this split holds out.*CARD\.md"
    ):
        check_fits(prior, 16, 1, ["Trouser", "Pullover"])
    check_fits(prior, 16, 1, ["Pullover"])  # fits: no exception


def test_prior_settings_key_ignores_the_time_budget():
    from eibacl.generate.backends.ddpm_prior import training_key

    assert training_key(PriorSettings(), "d", 32, 1) == training_key(
        PriorSettings(max_minutes=5), "d", 32, 1
    )
    assert training_key(PriorSettings(), "d", 32, 1) != training_key(
        PriorSettings(steps=9), "d", 32, 1
    )
    assert json.dumps(PriorSettings().ddpm_hyper())  # plain values: written to prior.json


def test_an_unwritable_prior_out_is_one_line_and_keeps_the_training(tiny_prior, tmp_path):
    from eibacl.generate.backends.ddpm_prior import save_prior

    prior = load_prior(tiny_prior[1])
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should go")
    with pytest.raises(RuntimeError, match=r"prior_out=.*cannot write the prior there.*cache"):
        save_prior(blocker / "prior", prior.backend, prior.pseudo, prior.info)
