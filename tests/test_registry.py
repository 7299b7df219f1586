"""The champion rule: higher val/accuracy wins; a tie is broken by validation near-OOD
KNN AUROC; a full tie (or a loss) keeps the current champion. Test metrics never count."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from eibacl import names, registry, tracking
from eibacl.evaluate.evaluation import SELECTION_NEAR_OOD


def _champion(name: str) -> str:
    return str(MlflowClient().get_model_version_by_alias(name, tracking.CHAMPION).version)


def test_selection_rule_and_tie_break(tiny_pretrain_run, fresh_registry):
    uri = tiny_pretrain_run.result.model_uri
    tags = {names.METHOD_TAG: "supcon"}

    def register(acc: float, auroc: float | None = None, test_acc: float = 0.5):
        metrics = {"val/accuracy": acc, "test/accuracy": test_acc}
        if auroc is not None:
            metrics[SELECTION_NEAR_OOD] = auroc
        return registry.register_encoder(uri, metrics, tags)

    first = register(0.50, 0.60)
    assert (first.champion, first.previous_champion) == (True, None)
    assert _champion(fresh_registry) == first.version

    worse = register(0.40, 0.99, test_acc=0.99)  # a better test score must not matter
    assert not worse.champion
    assert worse.previous_champion == first.version
    assert _champion(fresh_registry) == first.version

    tie_better_ood = register(0.50, 0.70)
    assert tie_better_ood.champion
    assert _champion(fresh_registry) == tie_better_ood.version

    full_tie = register(0.50, 0.70)
    assert not full_tie.champion
    assert _champion(fresh_registry) == tie_better_ood.version

    tie_missing_ood = register(0.50)  # no validation OOD metric: loses a tie
    assert not tie_missing_ood.champion

    better = register(0.60, 0.10)
    assert better.champion and better.previous_champion == tie_better_ood.version
    assert _champion(fresh_registry) == better.version

    version = MlflowClient().get_model_version(fresh_registry, better.version)
    assert version.tags["val/accuracy"] == "0.6"
    assert version.tags[names.METHOD_TAG] == "supcon"
    assert "test/accuracy" not in version.tags
    assert str(registry.champion_version().version) == better.version


def test_champion_version_is_none_without_registered_model(fresh_registry):
    assert registry.champion_version() is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"val/accuracy": "0.5", SELECTION_NEAR_OOD: "0.7"}, (0.5, 0.7)),
        ({"val/accuracy": 0.5}, (0.5, float("-inf"))),
        ({}, (float("-inf"), float("-inf"))),
    ],
)
def test_selection_key(values, expected):
    assert registry.selection_key(values) == expected


RACING_WORKER = """
import sys, time
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from eibacl import registry, tracking

name, uri, accuracy, role, sync = sys.argv[1:6]
tracking.REGISTERED_MODEL = name
tracking.configure()
sync = Path(sync)


def wait_for(flag):
    for _ in range(1200):
        if (sync / flag).exists():
            return
        time.sleep(0.1)
    raise TimeoutError(flag)


real_register, real_set = mlflow.register_model, MlflowClient.set_registered_model_alias


def register(*args, **kwargs):
    if role == "fast":  # registers after the slow worker, while it still holds a stale view
        wait_for("slow-registered")
    version = real_register(*args, **kwargs)
    if role == "slow":
        (sync / "slow-registered").touch()
    return version


def set_alias(self, *args, **kwargs):
    if role == "slow":  # its read came before the fast worker's version: write it late
        wait_for("fast-done")
    return real_set(self, *args, **kwargs)


mlflow.register_model = register
MlflowClient.set_registered_model_alias = set_alias
result = registry.register_encoder(uri, {"val/accuracy": float(accuracy)}, {})
(sync / f"{role}-done").touch()
print(result.version, result.champion)
"""


def test_two_workers_registering_at_once_leave_the_best_champion(
    tiny_pretrain_run, fresh_registry, tmp_path
):
    """The slow worker reads the registry before the better version exists and writes
    its alias after the fast worker's: read-compare-set alone would crown the worse one."""
    import subprocess
    import sys
    from pathlib import Path

    uri = tiny_pretrain_run.result.model_uri
    workers = {
        role: subprocess.Popen(
            [sys.executable, "-c", RACING_WORKER, fresh_registry, uri, acc, role, str(tmp_path)],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role, acc in (("slow", "0.4"), ("fast", "0.6"))
    }
    out = {}
    for role, worker in workers.items():
        stdout, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr[-3000:]
        out[role] = stdout.split()
    assert out["slow"][1] == "False" and out["fast"][1] == "True"
    assert _champion(fresh_registry) == out["fast"][0]
    version = MlflowClient().get_model_version(fresh_registry, out["fast"][0])
    assert version.tags["val/accuracy"] == "0.6"
