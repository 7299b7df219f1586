"""Hyperparameter search (`tune`): an Optuna study over SupCon temperature and DA-Fusion
strength (optionally alpha and near-OOD negatives per batch), selected on validation
metrics, one parent MLflow run per study with nested runs per trial."""

from eibacl.tune.study import TuneResult, open_study, tune

__all__ = ["TuneResult", "open_study", "tune"]
