"""The search space of `tune`, the objectives, and the pretrain config of one trial.

Selection never looks at the test split: the objectives are the probe's validation
accuracy (`val/accuracy`) and its validation near-OOD AUROC of the headline scorer
(`SELECTION_NEAR_OOD`: images of the `ood_val_classes`, the split's `ood_val` side, held
out from training and disjoint from the classes of the reported near-OOD set `ood_test`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from eibacl.config import (
    ConfigError,
    PretrainConfig,
    TuneConfig,
    TuneParams,
    search_list,
    strength_grid_list,
    volatile_fields,
)
from eibacl.evaluate.evaluation import SELECTION_NEAR_OOD

# objective parameter -> (short name, probe metric) of each objective, all maximised
OBJECTIVES: dict[str, tuple[tuple[str, str], ...]] = {
    "val_accuracy": (("val_accuracy", "val/accuracy"),),
    "val_accuracy+near_ood_auroc": (
        ("val_accuracy", "val/accuracy"),
        ("near_ood_auroc", SELECTION_NEAR_OOD),
    ),
}
# What a trial keeps of its probe (the registry's selection metrics among them).
KEPT_METRICS = ("val/accuracy", "val/ood/near/knn/auroc", "val/ood/near/mahalanobis/auroc")


def objective_names(config: TuneConfig) -> list[str]:
    return [short for short, _ in OBJECTIVES[config.objective]]


def objective_metrics(config: TuneConfig) -> list[str]:
    return [metric for _, metric in OBJECTIVES[config.objective]]


def directions(config: TuneConfig) -> list[str]:
    return ["maximize"] * len(OBJECTIVES[config.objective])


def distributions(config: TuneConfig) -> dict[str, BaseDistribution]:
    """The searched parameters and their Optuna distributions, in `search` order."""
    grid = strength_grid_list(config.strength_grid)
    every: dict[str, BaseDistribution] = {
        "temperature": FloatDistribution(config.temperature_min, config.temperature_max, log=True),
        "strength": (
            CategoricalDistribution(tuple(grid))
            if grid
            else FloatDistribution(config.strength_min, config.strength_max)
        ),
        "alpha": FloatDistribution(config.alpha_min, config.alpha_max),
        "near_ood_per_batch": IntDistribution(config.near_ood_min, config.near_ood_max),
    }
    return {name: every[name] for name in search_list(config.search)}


def suggest(trial: optuna.Trial, config: TuneConfig) -> dict[str, Any]:
    """Draw this trial's values of the searched parameters."""
    values: dict[str, Any] = {}
    for name, dist in distributions(config).items():
        if isinstance(dist, CategoricalDistribution):
            values[name] = trial.suggest_categorical(name, list(dist.choices))
        elif isinstance(dist, IntDistribution):
            values[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
        else:
            values[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return values


def trial_config(config: TuneConfig, values: dict[str, Any]) -> PretrainConfig:
    """The pretrain parameters of one trial: the study's, with the drawn values."""
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    settings = {name: getattr(config, name) for name in names}
    for name, value in values.items():
        settings[name] = str(value) if name == "strength" else value
    return PretrainConfig(**settings)


def study_settings(config: TuneConfig) -> dict[str, Any]:
    """What every trial of a study must share: the fixed (not searched) parameters."""
    searched = set(search_list(config.search))
    # how many trials, where the study is stored: the study's own, not its trials'
    study_only = {f.name for f in dataclasses.fields(TuneParams)} - {"objective", "seed"}
    skip = searched | study_only | set(volatile_fields(TuneConfig))
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in skip}


def settings_conflicts(stored: dict[str, Any], config: TuneConfig) -> dict[str, tuple]:
    """Fixed parameters whose value differs from the study's (only those both fix)."""
    current = study_settings(config)
    return {
        k: (stored[k], current[k])
        for k in sorted(set(stored) & set(current))
        if stored[k] != current[k]
    }


def check_compatible(study: optuna.Study, config: TuneConfig) -> None:
    """A study continued with another search space fails inside a trial; say it before."""
    wanted = distributions(config)
    for trial in study.get_trials(deepcopy=False):
        for name, dist in wanted.items():
            old = trial.distributions.get(name)
            if old is None:
                continue
            try:
                optuna.distributions.check_distribution_compatibility(old, dist)
            except ValueError as exc:
                hint = (
                    "use the same strength_grid (or strength_grid='' for both)"
                    if name == "strength"
                    else f"keep the scale of {name}"
                )
                raise ConfigError(
                    f"study {study.study_name!r} already searched {name} as {old}, not as "
                    f"{dist} ({exc}): {hint}, or start a new study with another study_name"
                ) from exc
