"""The tensors a training run works on, from the `data` parameters."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eibacl.config import DataConfig
from eibacl.data.imageset import ImageSet
from eibacl.data.sources import load_far_ood, load_source
from eibacl.data.splits import Split, make_split
from eibacl.evaluate.evaluation import EvalSets
from eibacl.paths import cache_dir


@dataclass
class TrainingData:
    imageset: ImageSet
    split: Split
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.split.id_classes)

    @property
    def train_ids(self) -> list[str]:
        return self.split.train

    def side(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of a split side (labels renumbered for ID sides)."""
        idx = self.split.indices(self.imageset, name)
        images = self.imageset.images[idx]
        if name in ("train", "val", "test"):
            return images, self.split.id_labels(self.imageset, idx)
        return images, self.imageset.labels[idx]


def prepare_data(config: DataConfig, split: Split | None = None) -> TrainingData:
    """Load the source (cached) and make the split, or reuse a logged one."""
    imageset = load_source(config.data, config.image_size, cache_dir(), config.skip_corrupt)
    split = split or make_split(imageset, config)
    data = TrainingData(imageset, split, *([torch.empty(0)] * 4))
    data.train_x, data.train_y = data.side("train")
    data.val_x, data.val_y = data.side("val")
    return data


def evaluation_sets(data: TrainingData) -> EvalSets:
    """Every set an evaluation reads: the split's sides plus MNIST as far-OOD."""
    test_x, test_y = data.side("test")
    near_x, near_labels = data.side("ood_test")
    near_val_x, _ = data.side("ood_val")
    far = load_far_ood(data.imageset.image_size, data.imageset.channels)
    return EvalSets(
        train_x=data.train_x,
        train_y=data.train_y,
        val_x=data.val_x,
        val_y=data.val_y,
        test_x=test_x,
        test_y=test_y,
        near_x=near_x,
        near_names=[data.imageset.class_names[int(y)] for y in near_labels],
        near_val_x=near_val_x,
        far_x=far.images,
        class_names=list(data.split.id_classes),
    )
