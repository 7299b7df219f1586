"""An interrupted pretrain run resumes from its checkpoint, bit for bit, with no duplicated
metric steps."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from eibacl import tracking
from eibacl.config import replace
from eibacl.train.pretrain import pretrain


def _stop_after(last_epoch: int):
    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == last_epoch:
            raise KeyboardInterrupt

    return on_epoch


def _history(run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key))


def test_resumed_run_equals_an_uninterrupted_one(tiny_pretrain_config, fresh_experiment):
    three_epochs = replace(tiny_pretrain_config, epochs=3, checkpoint_every=1)
    with pytest.raises(KeyboardInterrupt):
        pretrain(three_epochs, on_epoch=_stop_after(2))
    (interrupted,) = tracking.find_runs("attributes.status != 'FINISHED'")
    run_id = interrupted.info.run_id
    assert interrupted.info.status == "KILLED"  # an interrupt, not a failure
    assert [s for s, _ in _history(run_id, "train/loss")] == [1, 2]
    assert "eibacl.encoder_uri" not in interrupted.data.tags

    # resume with otherwise default (2-epoch) settings: the run's own parameters win
    resumed = pretrain(replace(tiny_pretrain_config, resume=run_id))
    assert resumed.run_id == run_id
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "3"
    assert "eibacl.encoder_uri" in run.data.tags
    for key in ("train/loss", "train/lr", "train/images_per_s"):
        assert [s for s, _ in _history(run_id, key)] == [1, 2, 3], key

    with pytest.MonkeyPatch.context() as mp:  # the reference run needs no logged model
        mp.setattr(tracking, "log_encoder", lambda encoder, name="encoder": "skipped")
        uninterrupted = pretrain(three_epochs)
    assert uninterrupted.run_id != run_id
    expected = _history(uninterrupted.run_id, "train/loss")
    got = _history(run_id, "train/loss")
    assert [s for s, _ in expected] == [1, 2, 3]
    for (_, a), (_, b) in zip(got, expected, strict=True):
        assert a == pytest.approx(b, abs=1e-6, rel=0)
    assert resumed.metrics["train/loss"] == pytest.approx(
        uninterrupted.metrics["train/loss"], abs=1e-6, rel=0
    )
    assert resumed.metrics["val/knn_accuracy"] == uninterrupted.metrics["val/knn_accuracy"]


def test_resuming_an_unknown_run_is_a_clear_error(tiny_pretrain_config, fresh_experiment):
    with pytest.raises(ValueError, match="0123456789abcdef0123456789abcdef.*not found"):
        pretrain(replace(tiny_pretrain_config, resume="0123456789abcdef0123456789abcdef"))


def test_resuming_a_run_without_checkpoint_is_a_clear_error(tiny_pretrain_config, fresh_experiment):
    import mlflow

    with mlflow.start_run(experiment_id=tracking.experiment_id()) as run:
        pass
    with pytest.raises(ValueError, match="no checkpoint"):
        pretrain(replace(tiny_pretrain_config, resume=run.info.run_id))


KILL_AFTER_CHECKPOINT = """
import dataclasses, json, os, signal, sys
from eibacl import names, tracking
from eibacl.config import PretrainConfig
from eibacl.train import loop
from eibacl.train.pretrain import pretrain

kill_at = int(sys.argv[2])
logged = []
real_log_artifact = tracking.log_artifact

def log_artifact(path, artifact_path=None):
    real_log_artifact(path, artifact_path)
    if artifact_path == names.CHECKPOINT_DIR:
        logged.append(path)
        if len(logged) == kill_at:  # epoch `kill_at` checkpointed, its metrics not logged
            os.kill(os.getpid(), signal.SIGKILL)

loop.tracking.log_artifact = log_artifact
pretrain(PretrainConfig(**json.loads(sys.argv[1])))
"""


def test_a_kill_between_checkpoint_and_metrics_loses_no_step(
    tiny_pretrain_config, fresh_experiment
):
    """kill -9 right after epoch 2's checkpoint reached the artifacts: the resumed run
    still holds every epoch's metrics exactly once."""
    import dataclasses
    import json
    import signal
    import subprocess
    import sys
    from pathlib import Path

    config = replace(tiny_pretrain_config, epochs=3, checkpoint_every=1)
    child = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_CHECKPOINT, json.dumps(dataclasses.asdict(config)), "2"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    (killed,) = tracking.find_runs("attributes.status = 'RUNNING'")
    run_id = killed.info.run_id
    assert [s for s, _ in _history(run_id, "train/loss")] == [1]  # epoch 2 not logged

    pretrain(replace(tiny_pretrain_config, resume=run_id))
    assert MlflowClient().get_run(run_id).info.status == "FINISHED"
    for key in ("train/loss", "train/lr", "train/images_per_s", "val/knn_accuracy"):
        assert [s for s, _ in _history(run_id, key)] == [1, 2, 3], key


KILL_AT_EPOCH = """
import json, os, signal, sys
from eibacl.config import PretrainConfig
from eibacl.train.pretrain import pretrain

def on_epoch(epoch, metrics):
    if epoch == int(sys.argv[2]):  # logged, past the last checkpoint
        os.kill(os.getpid(), signal.SIGKILL)

pretrain(PretrainConfig(**json.loads(sys.argv[1])), on_epoch=on_epoch)
"""


def _run_child(script: str, config, *args: str):
    import dataclasses
    import json
    import subprocess
    import sys
    from pathlib import Path

    return subprocess.run(
        [sys.executable, "-c", script, json.dumps(dataclasses.asdict(config)), *args],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _checkpoint_epoch(run_id: str) -> int:
    from eibacl.train.checkpoint import load_checkpoint

    return load_checkpoint(tracking.download(run_id, "checkpoints/last.pt"))["epoch"]


def test_kill_9_past_a_sparse_checkpoint_resumes_bit_identical(
    tiny_pretrain_config, fresh_experiment, monkeypatch
):
    """checkpoint_every=3, 6 epochs, kill -9 after epoch 5: the run resumes from epoch 3,
    trains 4-5 again without logging them twice, and ends with the weights and metrics
    of an uninterrupted run."""
    import signal

    import torch

    config = replace(tiny_pretrain_config, epochs=6, checkpoint_every=3)
    child = _run_child(KILL_AT_EPOCH, config, "5")
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    (killed,) = tracking.find_runs("attributes.status = 'RUNNING'")
    run_id = killed.info.run_id
    assert [s for s, _ in _history(run_id, "train/loss")] == [1, 2, 3, 4, 5]
    assert _checkpoint_epoch(run_id) == 3  # not 4 or 5: only every 3 epochs

    resumed = pretrain(replace(tiny_pretrain_config, resume=run_id))
    assert MlflowClient().get_run(run_id).info.status == "FINISHED"
    assert _checkpoint_epoch(run_id) == 6  # the last epoch is always checkpointed
    monkeypatch.setattr(tracking, "log_encoder", lambda encoder, name="encoder": "skipped")
    reference = pretrain(config)
    for key in ("train/loss", "train/lr", "val/knn_accuracy"):
        assert _history(run_id, key) == _history(reference.run_id, key), key
    got, expected = resumed.network.state_dict(), reference.network.state_dict()
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name


def test_sigterm_finishes_the_epoch_checkpoints_it_and_stops(
    tiny_pretrain_config, fresh_experiment
):
    """SIGTERM during epoch 2 (sent at the end of epoch 1) with no checkpoint due before
    epoch 4: epoch 2 is finished, checkpointed and logged, the run ends KILLED, and it
    resumes to the end."""
    import os
    import signal

    from eibacl.train.stopping import Terminated

    def terminate_after_first(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    config = replace(tiny_pretrain_config, epochs=4, checkpoint_every=10)
    with pytest.raises(Terminated, match="after epoch 2"):
        pretrain(config, on_epoch=terminate_after_first)
    assert signal.getsignal(signal.SIGTERM) is before  # the loop's handler is gone
    (stopped,) = tracking.find_runs("attributes.status != 'FINISHED'")
    run_id = stopped.info.run_id
    assert stopped.info.status == "KILLED"
    assert [s for s, _ in _history(run_id, "train/loss")] == [1, 2]
    assert _checkpoint_epoch(run_id) == 2

    pretrain(replace(tiny_pretrain_config, resume=run_id))
    assert MlflowClient().get_run(run_id).info.status == "FINISHED"
    assert [s for s, _ in _history(run_id, "train/loss")] == [1, 2, 3, 4]
