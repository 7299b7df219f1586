"""What `tune` refuses before any trial: unreachable storage, a study it cannot continue.
Every case checks that no MLflow run was created."""

from __future__ import annotations

import optuna
import pytest

from eibacl.config import ConfigError
from eibacl.tune import open_study, tune

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize(
    "url,hint",
    [
        ("sqlite:////proc/nope/optuna.db", "writable folder"),
        ("postgresql://nobody@127.0.0.1:1/x", "postgresql"),
        ("not a url", "sqlite:///optuna.db"),
    ],
)
def test_unusable_storage_is_a_config_error_naming_the_url(
    url, hint, tiny_tune, fresh_experiment, runs_of
):
    with pytest.raises(ConfigError) as info:
        tune(tiny_tune(storage=url, n_trials=1))
    message = str(info.value)
    assert url in message and hint in message
    assert runs_of(fresh_experiment) == []


def test_a_password_in_the_storage_url_is_not_shown(tiny_tune, fresh_experiment):
    with pytest.raises(ConfigError) as info:
        tune(tiny_tune(storage="postgresql://nobody:s3cret@127.0.0.1:1/x"))
    assert "s3cret" not in str(info.value) and "127.0.0.1:1" in str(info.value)


def test_continuing_with_other_objectives_is_refused(tiny_tune, storage, fresh_experiment, runs_of):
    open_study(tiny_tune(storage=storage, study_name="s"))
    with pytest.raises(ConfigError, match="objective"):
        tune(tiny_tune(storage=storage, study_name="s", objective="val_accuracy+near_ood_auroc"))
    assert runs_of(fresh_experiment) == []


def test_continuing_with_other_fixed_parameters_is_refused(
    tiny_tune, storage, fresh_experiment, runs_of
):
    open_study(tiny_tune(storage=storage, study_name="s"))
    open_study(tiny_tune(storage=storage, study_name="s", n_trials=9))  # operational: fine
    with pytest.raises(ConfigError, match="epochs 2 != 3"):
        tune(tiny_tune(storage=storage, study_name="s", epochs=3))
    assert runs_of(fresh_experiment) == []


def test_continuing_with_another_strength_grid_is_refused(
    tiny_tune, tiny_generator, storage, fresh_experiment, runs_of
):
    first = tiny_tune(
        storage=storage, study_name="g", search="temperature,strength", **tiny_generator
    )
    study = open_study(first)
    study.add_trial(
        optuna.trial.create_trial(
            params={"temperature": 0.1, "strength": 0.5},
            distributions={
                "temperature": optuna.distributions.FloatDistribution(0.03, 0.5, log=True),
                "strength": optuna.distributions.CategoricalDistribution((0.25, 0.5, 0.75)),
            },
            value=0.5,
        )
    )
    with pytest.raises(ConfigError, match="strength_grid"):
        tune(
            tiny_tune(
                storage=storage,
                study_name="g",
                search="temperature,strength",
                strength_grid="0.5",
                **tiny_generator,
            )
        )
    assert runs_of(fresh_experiment) == []


def _failing_pretrain(error):
    def pretrain(config, on_epoch=None, nested=False):
        raise error

    return pretrain


def test_a_trial_whose_loss_diverges_fails_alone_and_the_study_goes_on(
    tiny_tune, storage, fresh_experiment, runs_of, monkeypatch
):
    from eibacl.train import pretrain as pretrain_module

    monkeypatch.setattr(
        pretrain_module, "pretrain", _failing_pretrain(FloatingPointError("loss became nan"))
    )
    result = tune(tiny_tune(storage=storage, study_name="nan", n_trials=2))
    states = [t.state for t in result.study.get_trials()]
    assert states == [optuna.trial.TrialState.FAIL] * 2
    assert result.best_trial is None and result.registration is None
    (parent,) = runs_of(fresh_experiment)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["study/fail"] == 2
    assert "best/trial" not in parent.data.metrics


def test_any_other_error_stops_the_study_and_fails_its_run(
    tiny_tune, storage, fresh_experiment, runs_of, monkeypatch
):
    from eibacl.train import pretrain as pretrain_module

    monkeypatch.setattr(pretrain_module, "pretrain", _failing_pretrain(RuntimeError("disk full")))
    with pytest.raises(RuntimeError, match="disk full"):
        tune(tiny_tune(storage=storage, study_name="stop", n_trials=3))
    study = optuna.load_study(study_name="stop", storage=storage)
    assert len(study.trials) == 1
    (parent,) = runs_of(fresh_experiment)
    assert parent.info.status == "FAILED"
