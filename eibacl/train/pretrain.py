"""`pretrain`: supervised contrastive learning of the encoder (Khosla et al. 2020)."""

from __future__ import annotations

from eibacl.config import PretrainConfig
from eibacl.data.training_data import TrainingData
from eibacl.data.transforms import training_augmentation
from eibacl.models.encoders import Encoder
from eibacl.models.heads import SupConNetwork
from eibacl.train import feature_negatives
from eibacl.train.loop import EpochCallback
from eibacl.train.objectives import SupConObjective
from eibacl.train.runner import TrainResult, run_training
from eibacl.train.synthetic import load_pool


def pretrain(
    config: PretrainConfig, on_epoch: EpochCallback | None = None, nested: bool = False
) -> TrainResult:
    def make_objective(
        cfg: PretrainConfig, data: TrainingData, encoder: Encoder
    ) -> SupConObjective:
        network = SupConNetwork(encoder, cfg.projection_dim)
        return SupConObjective(
            network,
            cfg.temperature,
            feature_negatives.from_config(cfg),
            training_augmentation(cfg.crop_scale),
        )

    return run_training(
        config, "supcon", make_objective, load_pool, on_epoch=on_epoch, nested=nested
    )
