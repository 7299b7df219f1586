"""`tune`: an Optuna study of pretrain + probe trials inside one parent MLflow run.

    tune(TuneConfig(n_trials=6))          # or: mlflow run . -e tune --env-manager local

- Storage: any SQLAlchemy URL (`storage`); SQLite for one machine, PostgreSQL for
  several. The study is created, or continued when one of that `study_name` exists, and
  checked (reachable storage, same objectives, same fixed parameters, a compatible search
  space) before any trial or MLflow run starts.
- Workers: every process running `tune` on the same storage and study name runs its own
  `n_trials`; the storage hands each trial number out once. Dead workers' trials are
  failed by the heartbeat and retried once.
- MLflow: one parent run per study (its id is kept in the study, so a continued study and
  every worker log under the same parent); each trial adds a nested pretrain and a nested
  probe run (see `eibacl.tune.objective`). After `optimize`, the parent gets the best
  trial (`best/...` metrics and tags), `trials.csv`, and Optuna's plots.
- Selection never looks at the test split: validation accuracy, and optionally the
  validation near-OOD KNN AUROC (held-out classes from the training pool).
- The best trial's encoder is registered (for two objectives: the Pareto-optimal trial
  with the highest validation accuracy); the registry moves `champion` only when it beats
  the current champion on validation data.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from mlflow import ActiveRun

from eibacl import names, tracking
from eibacl.config import ConfigError, TuneConfig
from eibacl.registry import Registration, register_encoder, registered_version
from eibacl.tune import plots, space
from eibacl.tune.objective import METRICS, MODEL_URI, PRETRAIN_RUN, PROBE_RUN, TrialObjective

log = logging.getLogger(__name__)
PARENT_ATTR = "eibacl.mlflow_parent_run"
SETTINGS_ATTR = "eibacl.settings"
TRIALS_CSV = "trials.csv"
CLAIM_SETTLE_S = 1.0  # two workers starting a new study at once: the last claim wins
HEARTBEAT_S = 60
GRACE_S = 180
SCHEMA_ATTEMPTS = 5
# What a storage whose tables another worker is creating at the same moment answers.
SCHEMA_RACE = ("UNIQUE constraint failed", "already exists", "duplicate key")
# Trial failures that belong to the trial's parameters (a temperature too low for the
# learning rate makes the loss non-finite); every other error stops the study.
TRIAL_ERRORS = (FloatingPointError,)


@dataclass
class TuneResult:
    study: optuna.Study
    parent_run_id: str
    best_trial: FrozenTrial | None
    registration: Registration | None


class TrialSeededTPESampler(optuna.samplers.BaseSampler):
    """TPE whose random draws for trial n depend only on (seed, n): one process repeats a
    study exactly, and workers sharing a study with the same seed draw different trials.

    Each trial gets its own `TPESampler(seed=f(seed, n))` through Optuna's public API; TPE
    keeps no state between trials but its random generator (it reads the history from the
    study), so this is TPE with a per-trial seed.
    """

    def __init__(self, seed: int, **kwargs: Any) -> None:
        self._base_seed = seed
        self._kwargs = kwargs
        self._per_trial: dict[int, TPESampler] = {}

    def _for(self, trial: FrozenTrial) -> TPESampler:
        sampler = self._per_trial.get(trial.number)
        if sampler is None:
            seed = (self._base_seed * 1_000_003 + trial.number) % 2**32
            sampler = self._per_trial[trial.number] = TPESampler(seed=seed, **self._kwargs)
        return sampler

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        sampler = self._for(trial)
        del self._per_trial[trial.number]  # finished: its generator is not needed again
        sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to reseed: every trial's generator is made from (seed, trial number)."""


def display_url(url: str) -> str:
    """The storage URL with its password hidden (it is logged and shown in errors)."""
    try:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # an unparsable URL is shown as given
        return url


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Connect to the study storage, or say which URL failed and how to fix it."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from sqlalchemy.exc import SQLAlchemyError

    shown = display_url(url)
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine["connect_args"] = {"timeout": 60}  # several workers on one file wait
    elif url.startswith(("postgresql", "mysql")):
        engine["connect_args"] = {"connect_timeout": 10}  # an unreachable host fails soon
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # the heartbeat is flagged experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
        except ImportError as exc:
            raise ConfigError(
                f"storage={shown!r}: the database driver for this URL is not installed ({exc}); "
                "install it (PostgreSQL: pip install psycopg2-binary) or use a SQLite file, "
                "storage=sqlite:///optuna.db"
            ) from exc
        except (SQLAlchemyError, OSError, ValueError) as exc:
            racing = isinstance(exc, SQLAlchemyError) and any(m in str(exc) for m in SCHEMA_RACE)
            if racing and attempt + 1 < SCHEMA_ATTEMPTS:
                # workers starting together on a new database: one created the tables
                # while the other tried to; the next attempt finds them
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
                continue
            reason = str(exc).splitlines()[0]
            raise ConfigError(
                f"storage={shown!r} cannot be opened ({reason}): for SQLite give a file in a "
                "writable folder (sqlite:///optuna.db, or sqlite:////abs/path/optuna.db); for a "
                "server check host, port, user, password and that the database exists "
                "(postgresql://user:password@host:5432/optuna)"
            ) from exc
    raise AssertionError("unreachable")


def make_sampler(config: TuneConfig) -> TPESampler:
    """TPE with `constant_liar`: trials still running on other workers count as bad results,
    so parallel workers do not draw near-duplicates (set here, not left to Optuna's default)."""
    startup = max(2, min(10, config.n_trials // 2))
    return TrialSeededTPESampler(seed=config.seed, n_startup_trials=startup, constant_liar=True)


def make_pruner(config: TuneConfig) -> optuna.pruners.BasePruner:
    """Median pruning after 2 finished trials and a third of the epochs (noisy early kNN)."""
    if config.pruner == "none" or len(space.directions(config)) > 1:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=config.epochs // 3)


def open_study(config: TuneConfig) -> optuna.Study:
    """Create or load the study and check that this config may add trials to it."""
    storage = open_storage(config.storage)
    wanted = space.directions(config)
    study = optuna.create_study(
        storage=storage,
        study_name=config.study_name,
        directions=wanted,
        sampler=make_sampler(config),
        pruner=make_pruner(config),
        load_if_exists=True,
    )
    have = [d.name.lower() for d in study.directions]
    if have != wanted:
        raise ConfigError(
            f"study {config.study_name!r} in {display_url(config.storage)} has {len(have)} "
            f"objective(s), objective={config.objective!r} needs {len(wanted)}: use the "
            "study's objective, or another study_name"
        )
    if study.metric_names != space.objective_names(config):
        with warnings.catch_warnings():  # names the value columns of trials.csv and plots
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(space.objective_names(config))
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, space.study_settings(config))
    else:
        conflicts = space.settings_conflicts(stored, config)
        if conflicts:
            listed = ", ".join(f"{k} {old!r} != {new!r}" for k, (old, new) in conflicts.items())
            raise ConfigError(
                f"study {config.study_name!r} was run with other fixed parameters ({listed}): "
                "its trials would not be comparable; use the study's values, or another "
                "study_name"
            )
    space.check_compatible(study, config)
    return study


def _usable_parent(run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        run = tracking.get_run(run_id)
    except tracking.RunNotFound:  # another tracking store, or deleted; a store error surfaces
        return False
    return (
        run.info.lifecycle_stage == "active" and run.info.experiment_id == tracking.experiment_id()
    )


def _claim_parent(study: optuna.Study, tags: dict[str, str]) -> str:
    """The study's parent run: the one it records, else a new one (one claim wins)."""
    stored = study.user_attrs.get(PARENT_ATTR)
    if _usable_parent(stored):
        return stored
    mine = tracking.create_run(tags, run_name=f"tune-{study.study_name}")
    study.set_user_attr(PARENT_ATTR, mine)
    time.sleep(CLAIM_SETTLE_S)
    winner = study.user_attrs.get(PARENT_ATTR)
    if winner != mine and _usable_parent(winner):
        tracking.delete_run(mine)
        return winner
    return mine


@contextmanager
def parent_run(study: optuna.Study, config: TuneConfig) -> Iterator[ActiveRun]:
    """The study's parent run, active; an active run (or `mlflow run`'s) is used as is."""
    tags = {
        names.ENTRY_TAG: "tune",
        names.STUDY_TAG: study.study_name,
        names.STORAGE_TAG: display_url(config.storage),
        names.OBJECTIVE_TAG: config.objective,
    }
    run_id = None
    if tracking.active_run_id() is None and not os.environ.get("MLFLOW_RUN_ID"):
        tracking.configure()
        run_id = _claim_parent(study, tags)
    with tracking.start_run(run_name=f"tune-{study.study_name}", tags=tags, run_id=run_id) as run:
        yield run


def tune(config: TuneConfig) -> TuneResult:
    """Run `n_trials` trials of the study, then summarise it and register its best encoder."""
    study = open_study(config)  # storage and study checks come before any MLflow run
    tracking.configure()
    with parent_run(study, config) as run:
        _log_params(dataclasses.asdict(config) | {"storage": display_url(config.storage)})
        tracking.log_dict(
            {name: repr(dist) for name, dist in space.distributions(config).items()},
            "search_space.json",
        )
        study.optimize(
            TrialObjective(config, study.study_name),
            n_trials=config.n_trials,
            timeout=config.timeout_minutes * 60 or None,
            catch=TRIAL_ERRORS,
            gc_after_trial=True,
        )
        best = summarise(study, config)
        registration = register_best(study, best) if config.register else None
        return TuneResult(study, run.info.run_id, best, registration)


def _log_params(params: dict[str, Any]) -> None:
    """Parameters of the parent run; workers starting together may log them at once."""
    tracking.log_params(params, attempts=3)  # keeps what is logged already


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best completed trial; with two objectives, the Pareto-optimal trial with the
    highest validation accuracy (ties: higher validation near-OOD AUROC)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    if len(study.directions) == 1:
        return study.best_trial
    return max(study.best_trials, key=lambda t: (tuple(t.values), -t.number))


def summarise(study: optuna.Study, config: TuneConfig) -> FrozenTrial | None:
    """Log the study's state, best trial, trials table and plots to the parent run."""
    trials = study.get_trials(deepcopy=False)
    step = len(trials)
    counts = {
        f"study/{state.name.lower()}": float(sum(t.state == state for t in trials))
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    tracking.log_metrics(counts | {"study/trials": float(step)}, step=step)
    tracking.log_text(study.trials_dataframe().to_csv(index=False), TRIALS_CSV)
    objectives = space.objective_names(config)
    figures, skipped = plots.study_figures(study, objectives)
    for path, figure in figures.items():
        tracking.log_figure(figure, path)
    if skipped:
        tracking.log_dict(skipped, "plots/skipped.json")
    best = best_trial(study)
    if best is None:
        log.warning("study %s has no completed trial yet: nothing to select", study.study_name)
        return None
    metrics = {f"best/{name}": value for name, value in zip(objectives, best.values)}
    metrics |= {
        f"best/{k}": float(v) for k, v in best.params.items() if isinstance(v, (int, float))
    }
    metrics["best/trial"] = float(best.number)
    if len(objectives) > 1:
        metrics["study/pareto_size"] = float(len(study.best_trials))
    tracking.log_metrics(metrics, step=step)
    tracking.set_tags(
        {f"best/{k}": v for k, v in best.params.items()}
        | {
            names.BEST_TRIAL_TAG: best.number,
            names.BEST_PRETRAIN_RUN_TAG: best.user_attrs.get(PRETRAIN_RUN, ""),
            names.BEST_PROBE_RUN_TAG: best.user_attrs.get(PROBE_RUN, ""),
            names.BEST_MODEL_URI_TAG: best.user_attrs.get(MODEL_URI, ""),
        }
    )
    log.info(
        "study %s: best trial %d %s with %s",
        study.study_name,
        best.number,
        dict(zip(objectives, best.values)),
        best.params,
    )
    return best


def register_best(study: optuna.Study, best: FrozenTrial | None) -> Registration | None:
    """Register the best trial's encoder (once); the registry decides about `champion`."""
    if best is None:
        return None
    model_uri, run_id = best.user_attrs.get(MODEL_URI), best.user_attrs.get(PRETRAIN_RUN)
    if not model_uri or not run_id:
        log.warning("best trial %d has no logged encoder: nothing to register", best.number)
        return None
    version = registered_version(run_id)
    if version is not None:
        log.info("trial %d's encoder is already version %s", best.number, version)
        tracking.set_tags({names.MODEL_VERSION_TAG: version})
        return None
    source = tracking.get_run(run_id).data.tags
    tags = {
        names.METHOD_TAG: source.get(names.METHOD_TAG, "supcon"),
        names.ENTRY_TAG: "tune",
        names.SYNTHETIC_TAG: source.get(names.SYNTHETIC_TAG, "none"),
        names.DATA_TAG: source.get(names.DATA_TAG, ""),
        names.PRETRAIN_RUN_TAG: run_id,
        names.PROBE_RUN_TAG: best.user_attrs.get(PROBE_RUN, ""),
        names.ENCODER_URI_TAG: model_uri,
        names.STUDY_TAG: study.study_name,
        names.TRIAL_TAG: str(best.number),
    }
    registration = register_encoder(model_uri, best.user_attrs.get(METRICS, {}), tags)
    tracking.set_tags(
        {names.MODEL_VERSION_TAG: registration.version, names.CHAMPION_TAG: registration.champion}
    )
    if best.user_attrs.get(PROBE_RUN):
        tracking.set_run_tags(
            best.user_attrs[PROBE_RUN], {names.MODEL_VERSION_TAG: registration.version}
        )
    return registration
