"""`tune` parameters, search space, sampler and plots: fast, no training."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from eibacl.cli import parse_config
from eibacl.config import ConfigError, PretrainConfig, TuneConfig, replace
from eibacl.mlproject import render
from eibacl.tune import plots, space
from eibacl.tune.study import TrialSeededTPESampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_defaults_cover_the_issue_ranges_and_carry_every_pretrain_parameter():
    config = TuneConfig()
    assert (config.temperature_min, config.temperature_max) == (0.03, 0.5)
    assert (config.strength_min, config.strength_max) == (0.1, 1.0)
    assert config.search == "temperature,strength"
    assert config.objective == "val_accuracy"
    assert config.storage == "sqlite:///optuna.db"
    assert config.study_name == "eibacl"
    assert config.pruner == "median"
    tune_fields = {f.name for f in dataclasses.fields(TuneConfig)}
    assert {f.name for f in dataclasses.fields(PretrainConfig)} <= tune_fields
    assert "tune:" in render() and "entrypoints/tune.py --data {data}" in render()


@pytest.mark.parametrize(
    "changes,named",
    [
        ({"temperature_min": 0.0}, "temperature_min"),
        ({"temperature_min": -0.1}, "temperature_min"),
        ({"temperature_min": 0.5, "temperature_max": 0.5}, "temperature_min"),
        ({"temperature_min": 0.6, "temperature_max": 0.1}, "temperature_min"),
        ({"strength_min": 0.8, "strength_max": 0.2}, "strength_min"),
        ({"strength_max": 1.5}, "strength_min"),
        ({"strength_min": 0.0}, "strength_min"),
        ({"alpha_min": 0.5, "alpha_max": 0.5}, "alpha_min"),
        ({"near_ood_min": 64, "near_ood_max": 8}, "near_ood_min"),
        ({"strength_grid": "0.5,abc"}, "strength_grid"),
        ({"strength_grid": "0.5,1.5"}, "strength_grid"),
        ({"search": ""}, "search"),
        ({"search": "temperature,lr"}, "search"),
        ({"objective": "test_accuracy"}, "objective"),
        ({"pruner": "hyperband"}, "pruner"),
        ({"n_trials": 0}, "n_trials"),
        ({"timeout_minutes": -1.0}, "timeout_minutes"),
        ({"storage": " "}, "storage"),
        ({"synthetic": "none", "search": "temperature,strength"}, "search"),
        ({"synthetic": "none", "search": "alpha"}, "search"),
        ({"synthetic": "positives", "search": "near_ood_per_batch"}, "search"),
        ({"synthetic_set": "0123abcd", "search": "strength"}, "search"),
        ({"resume": "0123abcd"}, "resume"),
        ({"ood_val_classes": "", "objective": "val_accuracy+near_ood_auroc"}, "objective"),
    ],
)
def test_invalid_settings_raise_config_error_naming_the_parameter(changes, named):
    with pytest.raises(ConfigError, match=named):
        TuneConfig(**changes)
    with pytest.raises(ConfigError, match=named):
        replace(TuneConfig(), **changes)


def test_unknown_search_name_lists_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        TuneConfig(search="temperature,lr,momentum")
    message = str(info.value)
    assert "'lr'" in message and "'momentum'" in message
    for name in ("temperature", "strength", "alpha", "near_ood_per_batch"):
        assert name in message


def test_command_line_types_and_the_entry_point_error_line(capsys):
    from eibacl.cli import run_entry_point

    config = parse_config(TuneConfig, ["--n_trials", "3.0", "--strength_grid", "", "--seed", "7"])
    assert config.n_trials == 3 and config.strength_grid == "" and config.seed == 7

    def never(_config):
        raise AssertionError("tune must not start")

    assert run_entry_point(TuneConfig, ["--search", "temperature,bogus"], never, "") == 2
    assert "search" in capsys.readouterr().err


def test_default_space_is_log_temperature_and_a_strength_grid():
    dists = space.distributions(TuneConfig())
    assert list(dists) == ["temperature", "strength"]
    assert dists["temperature"] == FloatDistribution(0.03, 0.5, log=True)
    assert dists["strength"] == CategoricalDistribution((0.25, 0.5, 0.75))


def test_empty_grid_gives_a_continuous_strength_and_extra_names_their_ranges():
    config = TuneConfig(
        search="strength,alpha,near_ood_per_batch",
        strength_grid="",
        alpha_min=0.2,
        alpha_max=0.8,
        near_ood_min=4,
        near_ood_max=32,
    )
    dists = space.distributions(config)
    assert dists == {
        "strength": FloatDistribution(0.1, 1.0),
        "alpha": FloatDistribution(0.2, 0.8),
        "near_ood_per_batch": IntDistribution(4, 32),
    }


def test_suggested_values_lie_in_range_and_become_the_trial_pretrain_config():
    config = TuneConfig(
        search="temperature,strength,alpha,near_ood_per_batch",
        strength_grid="0.3,0.6",
        temperature=0.123,
        epochs=5,
    )
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    seen_strengths = set()
    for _ in range(12):
        trial = study.ask()
        values = space.suggest(trial, config)
        assert 0.03 <= values["temperature"] <= 0.5
        assert values["strength"] in (0.3, 0.6)
        assert 0.0 <= values["alpha"] <= 1.0
        assert isinstance(values["near_ood_per_batch"], int)
        assert 0 <= values["near_ood_per_batch"] <= 128
        seen_strengths.add(values["strength"])
        pretrain = space.trial_config(config, values)
        assert isinstance(pretrain, PretrainConfig)
        assert pretrain.temperature == values["temperature"]
        assert pretrain.strength == str(values["strength"])  # one strength per trial
        assert pretrain.alpha == values["alpha"]
        assert pretrain.near_ood_per_batch == values["near_ood_per_batch"]
        assert pretrain.epochs == 5 and pretrain.resume == ""
        study.tell(trial, 0.5)
    assert seen_strengths == {0.3, 0.6}


def test_unsearched_parameters_keep_the_study_values():
    config = TuneConfig(search="temperature", strength="0.4", alpha=0.3)
    pretrain = space.trial_config(config, {"temperature": 0.2})
    assert (pretrain.temperature, pretrain.strength, pretrain.alpha) == (0.2, "0.4", 0.3)


def test_study_settings_ignore_searched_and_operational_parameters():
    base = TuneConfig()
    settings = space.study_settings(base)
    assert "temperature" not in settings and "strength" not in settings  # searched
    assert "n_trials" not in settings and "storage" not in settings and "device" not in settings
    assert settings["epochs"] == base.epochs and settings["seed"] == base.seed
    assert space.settings_conflicts(settings, replace(base, n_trials=50, temperature=0.9)) == {}
    assert space.settings_conflicts(settings, replace(base, epochs=3)) == {
        "epochs": (base.epochs, 3)
    }


def test_a_changed_strength_grid_is_refused_before_any_trial():
    study = optuna.create_study(direction="maximize")
    first = TuneConfig(strength_grid="0.25,0.5")
    trial = study.ask()
    space.suggest(trial, first)
    study.tell(trial, 0.5)
    space.check_compatible(study, replace(first, temperature_max=0.3))  # float range: fine
    with pytest.raises(ConfigError, match="strength_grid"):
        space.check_compatible(study, replace(first, strength_grid="0.5,0.75"))
    with pytest.raises(ConfigError, match="strength"):
        space.check_compatible(study, replace(first, strength_grid=""))


def _draws(sampler, n):
    study = optuna.create_study(direction="maximize", sampler=sampler)
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(trial.suggest_float("temperature", 0.03, 0.5, log=True))
        study.tell(trial, out[-1])
    return out


def test_sampler_draws_depend_on_seed_and_trial_number_only():
    a = _draws(TrialSeededTPESampler(seed=3, n_startup_trials=10), 4)
    b = _draws(TrialSeededTPESampler(seed=3, n_startup_trials=10), 4)
    c = _draws(TrialSeededTPESampler(seed=4, n_startup_trials=10), 4)
    assert a == b
    assert a != c
    assert len(set(a)) == 4  # trial n and trial n+1 differ


def _fake_study(directions, values):
    study = optuna.create_study(directions=directions)
    for value in values:
        trial = study.ask()
        trial.suggest_float("temperature", 0.03, 0.5, log=True)
        if len(directions) == 1:
            trial.report(value * 0.5, 1)
        study.tell(trial, value if len(directions) == 1 else (value, 1.0 - value))
    return study


def test_single_objective_plots_and_importance_fallback():
    figures, skipped = plots.study_figures(_fake_study(["maximize"], [0.2, 0.5, 0.9]), ["acc"])
    assert {plots.HISTORY, plots.IMPORTANCES, plots.INTERMEDIATE} <= set(figures)
    assert not skipped
    figures, skipped = plots.study_figures(_fake_study(["maximize"], [0.4]), ["acc"])
    assert plots.HISTORY in figures and plots.IMPORTANCES not in figures
    assert "2 or more completed trials" in skipped[plots.IMPORTANCES]
    figures, skipped = plots.study_figures(_fake_study(["maximize"], [0.4, 0.4]), ["acc"])
    assert plots.IMPORTANCES in skipped  # no variation: nothing to attribute


def test_two_objectives_plot_a_pareto_front():
    figures, _ = plots.study_figures(
        _fake_study(["maximize", "maximize"], [0.2, 0.6, 0.7]), ["acc", "auroc"]
    )
    assert plots.PARETO in figures
    assert "plots/optimization_history_acc.png" in figures
    assert "plots/optimization_history_auroc.png" in figures


def test_parallel_workers_sample_with_constant_liar():
    """Each trial's TPE is made with constant_liar, so a trial still running on another
    worker counts against its neighbourhood (no near-duplicate draws)."""
    from eibacl.tune.study import make_sampler
    from tests import tiny

    sampler = make_sampler(tiny.tune_config())
    study = optuna.create_study(direction="maximize", sampler=sampler)
    trial = study.ask()
    assert sampler._for(trial)._constant_liar is True  # Optuna's TPE, as built for the trial
