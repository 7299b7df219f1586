"""One training run from parameters to a logged encoder, shared by pretrain and baseline."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from mlflow.exceptions import MlflowException

from eibacl import distributed, names, tracking
from eibacl.config import VARIANT_COMPONENTS, synthetic_components, volatile_fields
from eibacl.data.logged import log_data
from eibacl.data.splits import Split
from eibacl.data.training_data import TrainingData, prepare_data
from eibacl.device import resolve_device, seed_everything
from eibacl.models.encoders import Encoder, build_encoder
from eibacl.train.batches import BatchSampler, SyntheticPool
from eibacl.train.checkpoint import load_checkpoint
from eibacl.train.loop import EpochCallback, train_epochs

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_id: str
    encoder: Encoder
    network: torch.nn.Module
    data: TrainingData
    metrics: dict[str, float]
    model_uri: str


ObjectiveFactory = Callable[[Any, TrainingData, Encoder], Any]
PoolFactory = Callable[[Any, TrainingData], SyntheticPool | None]


def run_training(
    config: Any,
    method: str,
    make_objective: ObjectiveFactory,
    make_pool: PoolFactory,
    on_epoch: EpochCallback | None = None,
    after_training: Callable[[TrainResult], None] | None = None,
    nested: bool = False,
) -> TrainResult:
    distributed.init_from_env()  # under torchrun: join the group (else a no-op)
    resume_state = None
    if config.resume:
        loaded = _load_resume(config) if distributed.is_primary() else None
        resume_state, config = distributed.broadcast_object(loaded)
    tags = run_tags(config, method)
    device_type = resolve_device(config.device).type
    with tracking.start_run(
        run_name=f"{method}-{tags[names.SYNTHETIC_TAG]}",
        tags=tags,
        run_id=config.resume or None,
        nested=nested,
        log_system_metrics=tracking.system_metrics_wanted(config.system_metrics, device_type),
    ) as run:
        run_id = run.info.run_id
        split = Split.from_json(resume_state["split"]) if resume_state else None
        with distributed.primary_first():  # rank 0 fills the data cache
            data = prepare_data(config, split)
        tracking.log_params(dataclasses.asdict(config))
        tracking.set_tags({names.PARAMS_TAG: tracking.params_digest(dataclasses.asdict(config))})
        log_data(data, resumed=resume_state is not None, far_ood=getattr(config, "far_ood", None))
        pool = make_pool(config, data)
        device = distributed.local_device(resolve_device(config.device))
        seed_everything(config.seed)
        encoder = build_encoder(
            config.encoder,
            data.imageset.channels,
            config.width,
            data.imageset.image_size,
            getattr(config, "pretrained", "none"),
        )
        objective = make_objective(config, data, encoder)
        sampler = make_sampler(config, data, pool)
        logged = tracking.logged_metric_steps(run_id, names.TRAIN_LOSS) if resume_state else set()
        state = train_epochs(
            objective,
            sampler,
            config,
            device,
            (data.train_x, data.train_y, data.val_x, data.val_y),
            resume=resume_state,
            logged_steps=logged,
            on_epoch=on_epoch,
            extra_state={"config": dataclasses.asdict(config), "split": data.split.to_json()},
        )
        log_training_curves(run_id)
        model_uri = tracking.log_encoder(encoder, names.ENCODER_ARTIFACT)
        model_uri = distributed.broadcast_object(model_uri)  # rank 0's
        tracking.set_tags({names.ENCODER_URI_TAG: model_uri})
        result = TrainResult(run_id, encoder, objective.network, data, state.metrics, model_uri)
        if after_training is not None and distributed.is_primary():  # evaluation: rank 0
            after_training(result)
        return result


def run_tags(config: Any, method: str) -> dict[str, str]:
    return {
        names.METHOD_TAG: method,
        names.ENTRY_TAG: "pretrain" if method == "supcon" else "baseline",
        names.SYNTHETIC_TAG: getattr(config, "synthetic", "none"),
    }


CURVES = (names.TRAIN_LOSS, names.VAL_KNN_ACCURACY)


def log_training_curves(run_id: str) -> None:
    """Loss and validation kNN accuracy per epoch as a figure (the whole run's history, so
    a resumed run draws every epoch)."""
    if not distributed.is_primary():
        return
    from eibacl.evaluate.plots import training_curves_figure

    curves = {key: tracking.metric_history(run_id, key) for key in CURVES}
    tracking.log_figure(training_curves_figure(curves), names.CURVES_ARTIFACT)


def make_sampler(config: Any, data: TrainingData, pool: SyntheticPool | None) -> BatchSampler:
    components = synthetic_components(getattr(config, "synthetic", "none"))
    return BatchSampler(
        data.train_x,
        data.train_y,
        config.batch_size,
        config.seed,
        pool=pool,
        alpha=config.alpha if set(components) & set(VARIANT_COMPONENTS) else 0.0,
        positive_mode=config.positive_mode,
        near_ood_per_batch=config.near_ood_per_batch if "negatives" in components else 0,
    )


def _load_resume(config: Any) -> tuple[dict[str, Any], Any]:
    """The checkpoint of run `config.resume`, and that run's own parameters."""
    tracking.get_run(config.resume)
    try:
        path = tracking.download(config.resume, f"{names.CHECKPOINT_DIR}/{names.CHECKPOINT_FILE}")
    except MlflowException as exc:  # only "no such artifact" means no checkpoint
        if not tracking.is_not_found(exc):
            raise
        raise ValueError(
            f"run {config.resume} has no checkpoint to resume from ({names.CHECKPOINT_DIR}/"
            f"{names.CHECKPOINT_FILE}); start a new run instead"
        ) from exc
    state = load_checkpoint(path)
    saved = state["config"]
    for key in volatile_fields(type(config)):  # may differ from the interrupted run
        saved[key] = getattr(config, key)
    resumed = type(config)(**saved)
    if state["epoch"] >= resumed.epochs and tracking.get_run(config.resume).data.tags.get(
        names.ENCODER_URI_TAG
    ):
        raise ValueError(
            f"run {config.resume} already finished its {resumed.epochs} epochs and logged its "
            "encoder: nothing to resume (start a new run to train longer)"
        )
    return state, resumed
