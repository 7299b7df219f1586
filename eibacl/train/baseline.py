"""`baseline`: the same encoder trained end to end with cross-entropy, evaluated like a probe
(accuracy from its own head, OOD from its penultimate features and logits)."""

from __future__ import annotations

from eibacl import names, tracking
from eibacl.config import BaselineConfig, synthetic_components
from eibacl.data.training_data import TrainingData, evaluation_sets
from eibacl.data.transforms import training_augmentation
from eibacl.device import resolve_device
from eibacl.evaluate.evaluation import evaluate_encoder
from eibacl.evaluate.probe import log_evaluation
from eibacl.models.encoders import Encoder
from eibacl.models.heads import ClassifierNetwork
from eibacl.registry import register_encoder
from eibacl.train import feature_negatives
from eibacl.train.loop import EpochCallback
from eibacl.train.objectives import CrossEntropyObjective
from eibacl.train.runner import TrainResult, run_training
from eibacl.train.synthetic import load_pool


def baseline(
    config: BaselineConfig, on_epoch: EpochCallback | None = None, nested: bool = False
) -> TrainResult:
    def make_objective(
        cfg: BaselineConfig, data: TrainingData, encoder: Encoder
    ) -> CrossEntropyObjective:
        if cfg.knn_k > len(data.train_x):  # fail before training, not after it
            raise ValueError(
                f"knn_k={cfg.knn_k} is larger than the {len(data.train_x)} training images; "
                f"use -P knn_k={len(data.train_x)} or less"
            )
        components = synthetic_components(cfg.synthetic)
        uses_outliers = "negatives" in components or "features" in components
        return CrossEntropyObjective(
            ClassifierNetwork(encoder, data.num_classes),
            cfg.oe_weight if uses_outliers else 0.0,
            feature_negatives.from_config(cfg),
            training_augmentation(cfg.crop_scale),
        )

    def evaluate(result: TrainResult) -> None:
        evaluation = evaluate_encoder(
            result.encoder,
            evaluation_sets(result.data, config.far_ood),
            knn_k=config.knn_k,
            seed=config.seed,
            device=str(resolve_device(config.device)),
            head=result.network.classifier,
            covariance=config.covariance,
        )
        result.metrics |= evaluation.metrics
        log_evaluation(
            evaluation, f"cross-entropy baseline {result.run_id}", result.model_uri, result.data
        )
        if config.register:
            tags = {
                names.METHOD_TAG: "ce",
                names.SYNTHETIC_TAG: config.synthetic,
                names.DATA_TAG: result.data.split.source_fingerprint[:16],
            }
            registration = register_encoder(result.model_uri, evaluation.metrics, tags)
            tracking.set_tags(
                {
                    names.MODEL_VERSION_TAG: registration.version,
                    names.CHAMPION_TAG: registration.champion,
                }
            )

    return run_training(
        config,
        "ce",
        make_objective,
        load_pool,
        on_epoch=on_epoch,
        after_training=evaluate,
        nested=nested,
    )
