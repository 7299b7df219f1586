"""One trial of `tune`: pretrain with the drawn parameters, probe, return the validation
objectives.

Both the pretrain and the probe run are nested MLflow runs under the study's parent run
(pretrain's run has ended before the probe's starts, so the probe does not nest under
it) and carry the tags `eibacl.study` and `eibacl.trial`. A pretrain run that made the
synthetic set holds the nested generate run; the set itself is linked by the tag
`eibacl.synthetic_set_dir` either way.

Selection never looks at the test split: the values returned are the probe's
`val/accuracy` and, for two objectives, `SELECTION_NEAR_OOD` (images of ood_val_classes
from the training pool, disjoint from the test OOD images).

Pruning (single objective only; Optuna does not prune multi-objective studies): the
validation kNN accuracy pretrain computes every `eval_every` epochs is reported to the
trial, and a trial its pruner stops ends its pretrain run as KILLED with
`eibacl.trial_state=PRUNED`, before any probe.
"""

from __future__ import annotations

import logging

import optuna
from mlflow.exceptions import MlflowException

from eibacl import names, tracking
from eibacl.config import ProbeConfig, TuneConfig
from eibacl.tune import space

log = logging.getLogger(__name__)
INTERMEDIATE_METRIC = names.VAL_KNN_ACCURACY
RUN_NAME = "mlflow.runName"  # children read "trial-<n>-pretrain" / "trial-<n>-probe"
# trial user attributes
PRETRAIN_RUN = "pretrain_run_id"
PROBE_RUN = "probe_run_id"
MODEL_URI = "model_uri"
METRICS = "metrics"


class TrialObjective:
    """The callable `study.optimize` runs; needs the study's parent run to be active."""

    def __init__(self, config: TuneConfig, study_name: str) -> None:
        self.config = config
        self.study_name = study_name
        self.metrics = space.objective_metrics(config)
        self.single = len(self.metrics) == 1

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        from eibacl.evaluate.probe import probe
        from eibacl.train.pretrain import pretrain

        values = space.suggest(trial, self.config)
        pretrain_config = space.trial_config(self.config, values)
        tags = {names.STUDY_TAG: self.study_name, names.TRIAL_TAG: str(trial.number)}
        log.info("trial %d of study %s: %s", trial.number, self.study_name, values)
        seen: dict[str, str] = {}

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            if not seen:  # the first epoch: tag the (active) pretrain run at once
                seen["run_id"] = tracking.active_run_id()
                tracking.set_tags(tags | {RUN_NAME: f"trial-{trial.number}-pretrain"})
                trial.set_user_attr(PRETRAIN_RUN, seen["run_id"])
            value = metrics.get(INTERMEDIATE_METRIC)
            if value is None or not self.single:
                return
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(
                    f"trial {trial.number} pruned at epoch {epoch}: "
                    f"{INTERMEDIATE_METRIC} {value:.4f} is below the median of earlier trials"
                )

        try:
            result = pretrain(pretrain_config, on_epoch=on_epoch, nested=True)
        except optuna.TrialPruned:
            _mark(seen.get("run_id"), "PRUNED", status="KILLED")
            raise
        except Exception:  # noqa: BLE001 - re-raised as it is, after marking the run FAIL
            _mark(seen.get("run_id"), "FAIL")
            raise
        tracking.set_run_tags(result.run_id, tags | {RUN_NAME: f"trial-{trial.number}-pretrain"})
        trial.set_user_attr(PRETRAIN_RUN, result.run_id)
        trial.set_user_attr(MODEL_URI, result.model_uri)
        probed = probe(
            ProbeConfig(
                encoder_uri=result.model_uri,
                register=False,
                knn_k=self.config.knn_k,
                far_ood=self.config.far_ood,
                covariance=self.config.covariance,
                device=self.config.device,
                probe_seed=self.config.seed,
            ),
            nested=True,
        )
        tracking.set_run_tags(probed.run_id, tags | {RUN_NAME: f"trial-{trial.number}-probe"})
        trial.set_user_attr(PROBE_RUN, probed.run_id)
        metrics = probed.evaluation.metrics
        kept = {m: float(metrics[m]) for m in (*space.KEPT_METRICS, *self.metrics) if m in metrics}
        trial.set_user_attr(METRICS, kept)
        missing = [m for m in self.metrics if m not in metrics]
        if missing:
            raise RuntimeError(f"the probe logged no {', '.join(missing)}: cannot score trial")
        objective = tuple(float(metrics[m]) for m in self.metrics)
        log.info("trial %d: %s", trial.number, dict(zip(self.metrics, objective)))
        return objective[0] if self.single else objective


def _mark(run_id: str | None, state: str, status: str | None = None) -> None:
    """Record on the trial's pretrain run how the trial ended (it already ended FAILED)."""
    if run_id is None:
        return
    try:
        tracking.set_run_tags(run_id, {names.TRIAL_STATE_TAG: state})
        if status is not None:
            tracking.end_run_as(run_id, status)
    except MlflowException:  # the store refused: the trial's own outcome is not hidden
        log.warning("could not mark run %s as %s", run_id, state, exc_info=True)
