"""A `synthetic_set` that names nothing usable fails with one line naming the parameter."""

from __future__ import annotations

import mlflow
import pytest

from eibacl import tracking
from eibacl.config import ConfigError
from eibacl.train.synthetic import _referenced_set


def test_an_unknown_run_id_names_synthetic_set(fresh_experiment):
    with pytest.raises(ConfigError, match=r"synthetic_set='0123abcd' is neither a set folder"):
        _referenced_set("0123abcd")


def test_a_run_that_is_no_generate_run_names_synthetic_set(fresh_experiment):
    with mlflow.start_run(experiment_id=tracking.experiment_id()) as run:
        pass
    with pytest.raises(ConfigError, match=r"synthetic_set=\w+: that run is not a generate run"):
        _referenced_set(run.info.run_id)
