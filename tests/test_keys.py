"""key_part against a real MLflow store: every character MLflow refuses is made valid."""

from __future__ import annotations

import string

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from eibacl.keys import key_part

USER_VALUES = [
    "positives+negatives",
    "T-shirt/top",
    "Dichtungsring grün",
    "class-mix@0.8",
    "..",
    ".",
    "",
    "a//b",
    "50% off!",
]


def _accepted(key: str) -> bool:
    try:
        mlflow.set_tag(key, "x")
        mlflow.log_metric(key, 1.0)
    except MlflowException:
        return False
    return True


def test_every_character_mlflow_rejects_becomes_valid(fresh_experiment):
    candidates = [chr(c) for c in range(32, 127)] + ["ü", "é", "€", "\t", "😀"]
    with mlflow.start_run():
        rejected = [c for c in candidates if not _accepted(f"eibacl.t{c}x")]
        assert "+" in rejected and "@" in rejected  # the check itself can fail
        for c in rejected:
            assert _accepted(f"eibacl.t{key_part(c)}x"), repr(c)
        for value in USER_VALUES:
            assert _accepted(f"test/accuracy/{key_part(value)}"), repr(value)
            assert _accepted(f"eibacl.cell.supcon.{key_part(value)}.0"), repr(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("positives+negatives", "positives_negatives"),
        ("T-shirt/top", "T-shirt_top"),
        ("Dichtungsring grün", "Dichtungsring grün"),
        ("class-mix@0.8", "class-mix_0.8"),
        ("..", "_.."),
        ("", "_"),
    ],
)
def test_key_part_keeps_what_mlflow_allows(value, expected):
    assert key_part(value) == expected
    assert set(key_part(string.ascii_letters)) <= set(string.ascii_letters)
