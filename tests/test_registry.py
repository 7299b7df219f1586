"""The champion rule: higher val/accuracy wins; a tie is broken by validation near-OOD
KNN AUROC; a full tie (or a loss) keeps the current champion. Test metrics never count."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from eibacl import registry, tracking
from eibacl.evaluate.evaluation import SELECTION_NEAR_OOD


def _champion(name: str) -> str:
    return str(MlflowClient().get_model_version_by_alias(name, tracking.CHAMPION).version)


def test_selection_rule_and_tie_break(tiny_pretrain_run, fresh_registry):
    uri = tiny_pretrain_run.result.model_uri
    tags = {tracking.METHOD_TAG: "supcon"}

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
    assert version.tags[tracking.METHOD_TAG] == "supcon"
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
