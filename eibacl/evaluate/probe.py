"""`probe`: freeze a pretrained encoder, fit a linear classifier, report accuracy and OOD."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch
from mlflow.exceptions import MlflowException

from eibacl import names, tracking
from eibacl.config import ProbeConfig
from eibacl.data.logged import load_run_data, log_datasets, metrics_by_dataset
from eibacl.data.training_data import TrainingData, evaluation_sets
from eibacl.device import resolve_device
from eibacl.evaluate.evaluation import Evaluation, evaluate_encoder
from eibacl.evaluate.scorers import knn_validation
from eibacl.registry import Registration, register_encoder

log = logging.getLogger(__name__)


@dataclass
class ProbeResult:
    run_id: str
    evaluation: Evaluation
    registration: Registration | None


def check_encoder_input(encoder: torch.nn.Module, data: TrainingData, uri: str) -> None:
    """One line when the data's images are not the shape the logged encoder was exported for
    (read from its graph: no trial forward pass, so no other failure is taken for this one)."""
    want = (data.imageset.channels, data.imageset.image_size, data.imageset.image_size)
    got = exported_input_shape(encoder)
    if got is not None and got != want:
        raise ValueError(
            f"encoder {uri} takes {got[0]}-channel {got[1]}x{got[2]} px images, the data has "
            f"{want[0]} channels at {want[1]}x{want[2]} px: probe it with the data and "
            "image_size it was pretrained on"
        )


def exported_input_shape(encoder: torch.nn.Module) -> tuple[int, ...] | None:
    """(C, H, W) of a torch.export encoder's image input; None when the graph does not say."""
    graph = getattr(getattr(encoder, "module", None), "graph", None)
    placeholders = [] if graph is None else [n for n in graph.nodes if n.op == "placeholder"]
    value = placeholders[0].meta.get("val") if placeholders else None
    shape = tuple(getattr(value, "shape", ()))[1:]
    return shape if len(shape) == 3 and all(isinstance(d, int) for d in shape) else None


def probe(config: ProbeConfig, nested: bool = False) -> ProbeResult:
    model_uri, source_run_id = tracking.resolve_encoder(config.encoder_uri)
    source = tracking.get_run(source_run_id)
    try:
        encoder = tracking.load_encoder(model_uri)
    except (MlflowException, OSError) as exc:
        raise ValueError(
            f"encoder_uri={model_uri!r} could not be loaded: run {source_run_id} has no logged "
            f"encoder there (did it finish? resume it with -P resume={source_run_id})"
        ) from exc
    data = load_run_data(source_run_id)
    check_encoder_input(encoder, data, model_uri)
    sets = evaluation_sets(data, config.far_ood)
    sets.check(config.knn_k)  # before a run exists: a bad knn_k leaves nothing behind
    method = source.data.tags.get(names.METHOD_TAG, "supcon")
    tags = {
        names.METHOD_TAG: method,
        names.ENTRY_TAG: "probe",
        names.SYNTHETIC_TAG: source.data.tags.get(names.SYNTHETIC_TAG, "none"),
        names.DATA_TAG: source.data.tags.get(names.DATA_TAG, ""),
        names.PRETRAIN_RUN_TAG: source_run_id,
        names.ENCODER_URI_TAG: model_uri,
    }
    with tracking.start_run(run_name=f"probe-{method}", tags=tags, nested=nested) as run:
        tracking.log_params(dataclasses.asdict(config) | {"pretrain_run": source_run_id})
        tracking.log_params(source.data.params)
        tracking.set_tags({names.PARAMS_TAG: tracking.params_digest(dataclasses.asdict(config))})
        tracking.log_text(data.split.to_json(), names.SPLIT_ARTIFACT)
        log_datasets(data, config.far_ood)
        device = resolve_device(config.device)
        evaluation = evaluate_encoder(
            encoder,
            sets,
            knn_k=config.knn_k,
            seed=config.probe_seed,
            device=str(device),
            covariance=config.covariance,
        )
        # The training loop's last-epoch metric, so probe and baseline runs share columns.
        evaluation.metrics[names.VAL_KNN_ACCURACY] = knn_validation(
            encoder, data.train_x, data.train_y, data.val_x, data.val_y, device
        )
        log_evaluation(evaluation, f"{method} probe of run {source_run_id}", model_uri, data)
        registration = None
        if config.register:
            registration = register_encoder(model_uri, evaluation.metrics, tags)
            tracking.set_tags(
                {
                    names.MODEL_VERSION_TAG: registration.version,
                    names.CHAMPION_TAG: registration.champion,
                }
            )
        return ProbeResult(run.info.run_id, evaluation, registration)


def log_evaluation(evaluation: Evaluation, title: str, model_uri: str, data: TrainingData) -> None:
    """Metrics (linked to the logged encoder at `model_uri` and to the split side of `data`
    each was measured on), figures and the summary."""
    from eibacl.evaluate.evaluation import summary_markdown

    for part, dataset in metrics_by_dataset(evaluation.metrics, data):
        tracking.log_metrics(part, model_uri=model_uri, dataset=dataset)
    for path, figure in evaluation.figures.items():
        tracking.log_figure(figure, path)
    tracking.log_dict(evaluation.summary, names.SUMMARY_JSON)
    tracking.log_text(summary_markdown(evaluation.summary, title), names.SUMMARY_MD)
    log.info("%s: %s", title, {k: round(v, 4) for k, v in evaluation.summary.items()})
