"""The tensors a training run works on, from the `data` parameters."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from eibacl.config import DataConfig
from eibacl.data.far_ood import far_ood_name, load_far_ood_set, resolve_far_ood
from eibacl.data.imageset import ImageSet
from eibacl.data.report import needs_attention, report_line
from eibacl.data.sources import load_source
from eibacl.data.splits import Split, make_split
from eibacl.evaluate.evaluation import EvalSets
from eibacl.paths import cache_dir

log = logging.getLogger(__name__)


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
    imageset = load_source(
        config.data, config.image_size, cache_dir(), config.skip_corrupt, config.masks
    )
    line = report_line(imageset)
    if line:
        log.log(logging.WARNING if needs_attention(imageset) else logging.INFO, line)
    split = split or make_split(imageset, config)
    data = TrainingData(imageset, split, *([torch.empty(0)] * 4))
    data.train_x, data.train_y = data.side("train")
    data.val_x, data.val_y = data.side("val")
    return data


def evaluation_sets(data: TrainingData, far_ood: str = "auto") -> EvalSets:
    """Every set an evaluation reads: the split's sides plus the far-OOD set of `far_ood`
    (resolved against the run's `data`; absent for 'none')."""
    test_x, test_y = data.side("test")
    near_x, near_labels = data.side("ood_test")
    near_val_x, _ = data.side("ood_val")
    spec = resolve_far_ood(far_ood, str(data.split.params.get("data", "fashion-mnist")))
    far = load_far_ood_set(spec, data.imageset.image_size, data.imageset.channels)
    if far is None:
        log.info(
            "far-OOD: none (far_ood=%s for data %s): no ood/far/* metrics or plots; give "
            "-P far_ood=folder:<path> with images of none of the classes to report them",
            far_ood,
            data.split.params.get("data"),
        )
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
        far_x=None if far is None else far.images,
        class_names=list(data.split.id_classes),
        far_name=far_ood_name(spec),
        test_groups=object_ids(data, "test"),
        near_groups=object_ids(data, "ood_test"),
    )


def object_ids(data: TrainingData, side: str) -> list[str] | None:
    """Object id of each image of a split side; None where the source has no object ids
    (no object has two images: Fashion-MNIST, a folder of single-view images)."""
    groups = data.imageset.groups
    if len(set(groups)) == len(groups):
        return None
    return [groups[i] for i in data.split.indices(data.imageset, side).tolist()]
