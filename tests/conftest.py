"""Shared test isolation: one MLflow store and one data cache per test session.

Nothing a test does may write into the checkout: the tracking store is a sqlite file in a
session temporary folder, every experiment the tests use is created there with its
artifact location in that folder too (MLflow would otherwise put artifacts in
``./mlruns`` of the working directory), and ``EIBACL_CACHE`` points at a session folder
(Fashion-MNIST is decoded once per session and shared by every test). No test changes the
working directory.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import tiny

SESSION_EXPERIMENT = "eibacl-tests"
ENV_CLEARED = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")


def create_experiment(name: str, artifact_root: Path) -> str:
    """Create (or find) experiment `name` with its artifacts under `artifact_root`."""
    import mlflow

    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = artifact_root / name
    location.mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(name, artifact_location=location.as_uri())


@pytest.fixture(scope="session")
def mlflow_home(tmp_path_factory) -> Path:
    """The session's folder holding the sqlite store and every artifact."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(scope="session")
def eibacl_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("eibacl-cache")


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(mlflow_home: Path, eibacl_cache: Path) -> Iterator[dict[str, str]]:
    """Session-wide: MLflow store, artifact root and eibacl cache in temporary folders."""
    with pytest.MonkeyPatch.context() as mp:
        uri = f"sqlite:///{mlflow_home / 'mlflow.db'}"
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("EIBACL_CACHE", str(eibacl_cache))
        mp.setenv("MLFLOW_EXPERIMENT_NAME", SESSION_EXPERIMENT)
        for name in ENV_CLEARED:
            mp.delenv(name, raising=False)
        import mlflow

        mlflow.set_tracking_uri(uri)
        create_experiment(SESSION_EXPERIMENT, mlflow_home / "artifacts")
        yield {"MLFLOW_TRACKING_URI": uri, "EIBACL_CACHE": str(eibacl_cache)}


@pytest.fixture(autouse=True)
def _end_mlflow_runs() -> Iterator[None]:
    """No MLflow run leaks from one test into the next (a failure may leave one active),
    and no test leaves MLflow pointed at another store."""
    yield
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])


@pytest.fixture
def fresh_experiment(monkeypatch, mlflow_home: Path) -> str:
    """A new, empty experiment for this test (its name in `MLFLOW_EXPERIMENT_NAME`), so
    lookups such as 'the newest finished pretrain run' only see this test's runs."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    create_experiment(name, mlflow_home / "artifacts")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", name)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    return name


@pytest.fixture
def fresh_registry(monkeypatch) -> str:
    """A registered-model name of this test's own, so champion checks see no other test."""
    from eibacl import tracking

    name = f"eibacl-encoder-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(tracking, "REGISTERED_MODEL", name)
    return name


@pytest.fixture(scope="session")
def make_experiment(mlflow_home: Path):
    """`make_experiment(name)` -> id: an experiment whose artifacts stay in the session
    folder."""
    return lambda name: create_experiment(name, mlflow_home / "artifacts")


@pytest.fixture
def tiny_pretrain_config():
    """`tiny.pretrain_config()`."""
    return tiny.pretrain_config()


@pytest.fixture
def tiny_baseline_config():
    """`tiny.baseline_config()`."""
    return tiny.baseline_config()


@pytest.fixture(scope="session")
def noise_far_ood(tmp_path_factory) -> str:
    """`far_ood=folder:<path>` of 64 fixed noise images (`tiny.noise_far_ood`), for runs
    whose far-OOD metrics are not what a test checks: MNIST costs seconds per process."""
    return tiny.noise_far_ood(tmp_path_factory.mktemp("noise-far-ood"))


@dataclass
class TinyRun:
    """A finished tiny pretrain run, shared by the tests that only read it."""

    experiment: str
    config: object
    result: object  # eibacl.train.runner.TrainResult

    @property
    def run_id(self) -> str:
        return self.result.run_id


@dataclass
class TinyProbe:
    """A probe of `TinyRun`, with what the linear probe was trained on."""

    run: TinyRun
    result: object  # eibacl.evaluate.probe.ProbeResult
    probe_inputs: list[dict] = field(default_factory=list)


@pytest.fixture(scope="session")
def tiny_pretrain_run(mlflow_home: Path) -> TinyRun:
    """One tiny SupCon pretrain run (2 epochs), in an experiment of its own."""
    from eibacl.train.pretrain import pretrain

    name = "tiny-pretrain"
    create_experiment(name, mlflow_home / "artifacts")
    config = tiny.pretrain_config()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_EXPERIMENT_NAME", name)
        result = pretrain(config)
    return TinyRun(experiment=name, config=config, result=result)


@pytest.fixture(scope="session")
def tiny_probe(tiny_pretrain_run: TinyRun) -> TinyProbe:
    """`probe` with an empty encoder_uri in the tiny run's experiment; records the features
    and labels `train_linear_probe` is given."""
    from eibacl.config import ProbeConfig
    from eibacl.evaluate import evaluation
    from eibacl.evaluate.probe import probe

    captured: list[dict] = []
    original = evaluation.train_linear_probe

    def recording(train_f, train_y, val_f, val_y, num_classes, **kwargs):
        captured.append(
            {"train_f": train_f.clone(), "train_y": train_y.clone(), "val_y": val_y.clone()}
        )
        return original(train_f, train_y, val_f, val_y, num_classes, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_EXPERIMENT_NAME", tiny_pretrain_run.experiment)
        mp.setattr(evaluation, "train_linear_probe", recording)
        result = probe(ProbeConfig(device="cpu", knn_k=5))
    return TinyProbe(run=tiny_pretrain_run, result=result, probe_inputs=captured)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module's tiny models: faster on 2 cores, and immune to an
    oversubscribed CPU (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
