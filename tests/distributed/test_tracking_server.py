"""Runs logged to a remote MLflow tracking server: `mlflow server` on loopback (sqlite
backend, local artifact root, artifacts proxied over HTTP), a tiny pretrain with
MLFLOW_TRACKING_URI=http://..., and the run, its metrics, checkpoint and encoder read back
over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.distributed.dist_helpers import free_port

STARTUP_S = 120


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed below
    mlflow_cli = [sys.executable, "-c", "from mlflow.cli import cli; cli()"]
    process = subprocess.Popen(
        [
            *mlflow_cli,
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers are in its process group, stopped together
    )
    try:
        deadline = time.monotonic() + STARTUP_S
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (root / "server.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"mlflow server did not answer {url}/health:\n{tail}")
            time.sleep(0.5)
        yield {"url": url, "artifacts": root / "artifacts", "root": root}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def remote_tracking(tracking_server, monkeypatch) -> Iterator[str]:
    """MLFLOW_TRACKING_URI pointing at the server for this test, the session store after."""
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server["url"])
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "eibacl-remote")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    yield tracking_server["url"]
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def test_tiny_pretrain_is_logged_to_the_server_and_read_back_over_http(
    remote_tracking, tracking_server, tiny_pretrain_config, tmp_path: Path
):
    from eibacl.train.pretrain import pretrain

    result = pretrain(tiny_pretrain_config)

    client = MlflowClient(tracking_uri=remote_tracking)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "2" and run.data.params["temperature"] == "0.1"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "eibacl-remote"
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # served by the server
    history = client.get_metric_history(result.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2]
    assert run.data.metrics["val/knn_accuracy"] == pytest.approx(result.metrics["val/knn_accuracy"])
    paths = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"checkpoints", "split.json"} <= paths
    checkpoint = Path(
        mlflow.artifacts.download_artifacts(
            run_id=result.run_id,
            artifact_path="checkpoints/last.pt",
            dst_path=str(tmp_path),
            tracking_uri=remote_tracking,
        )
    )
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 2
    # the files live in the server's artifact root, not in this process's folders
    stored = list(tracking_server["artifacts"].rglob("last.pt"))
    assert len(stored) == 1
    model = mlflow.get_logged_model(run.data.tags["eibacl.encoder_uri"].removeprefix("models:/"))
    assert model.source_run_id == result.run_id
    assert model.artifact_location.startswith("mlflow-artifacts:")
    assert list(tracking_server["artifacts"].rglob("MLmodel"))  # the encoder, stored there
