"""The unlabelled pool: hand counts on a hand-made split, the Fashion-MNIST rule at tiny
sizes, folder pools with corrupt files, and one clear line per bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from eibacl.config import ConfigError, GenerateConfig, validate
from eibacl.data.imageset import ImageSet
from eibacl.data.pool import load_unlabelled_pool
from eibacl.data.splits import SIDES, Split
from eibacl.data.training_data import prepare_data
from tests import tiny

CLASSES = ["a", "b", "c", "d"]


def hand_made() -> tuple[ImageSet, Split]:
    """5 training-subset and 3 test-subset images per class; a, b in distribution, c held out
    (reported), d held out (validation)."""
    ids, labels, subsets = [], [], []
    for subset, per_class in (("train", 5), ("test", 3)):
        for y, name in enumerate(CLASSES):
            for i in range(per_class):
                ids.append(f"{subset}/{name}{i}")
                labels.append(y)
                subsets.append(subset)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (len(ids), 1, 16, 16), generator=gen, dtype=torch.uint8)
    imageset = ImageSet(images, torch.tensor(labels), ids, CLASSES, "hand", subsets=subsets)
    split = Split(
        id_classes=["a", "b"],
        ood_classes=["c"],
        train=["train/a0", "train/a1", "train/b0"],
        val=["train/a2", "train/b1"],
        test=[f"test/{c}{i}" for c in "ab" for i in range(3)],
        ood_val=["train/d0", "train/d1"],
        ood_test=[f"test/c{i}" for i in range(3)],
        ood_val_classes=["d"],
    )
    return imageset, split


def test_auto_pool_is_the_training_subset_outside_the_split_by_hand_count():
    imageset, split = hand_made()
    pool = load_unlabelled_pool("auto", imageset, split)
    # a: 5 - 2 train - 1 val = 2; b: 5 - 1 train - 1 val = 3; c, d held out; no test image.
    assert pool.ids == ["train/a3", "train/a4", "train/b2", "train/b3", "train/b4"]
    assert pool.classes == ["a", "b"]
    where = imageset.index_of()
    assert torch.equal(pool.images, imageset.images[[where[i] for i in pool.ids]])
    assert (
        len(pool.digest()) == 64
        and pool.digest() == load_unlabelled_pool("auto", imageset, split).digest()
    )


def test_fashion_mnist_pool_at_tiny_sizes_is_disjoint_and_holds_no_held_out_class():
    config = GenerateConfig()
    assert config.prior_pool == "auto"
    data = prepare_data(tiny.pretrain_config())
    pool = load_unlabelled_pool("auto", data.imageset, data.split)
    split = data.split
    # 5 ID classes x (6000 training-subset images - 8 shots - 10 validation) = 29,910
    assert len(split.id_classes) == 5
    assert len(pool) == 5 * (6000 - 8 - 10)
    on_sides = {i for side in SIDES for i in split.side(side)}
    assert not on_sides & set(pool.ids)
    assert all(i.startswith("train/") for i in pool.ids)
    assert set(pool.classes) == set(split.id_classes)
    held_out = set(split.ood_classes) | set(split.ood_val_classes)
    where = data.imageset.index_of()
    labels = {data.imageset.class_names[int(data.imageset.labels[where[i]])] for i in pool.ids}
    assert labels == set(split.id_classes) and not labels & held_out


def test_none_and_sources_without_a_training_subset_give_no_pool(caplog):
    imageset, split = hand_made()
    assert load_unlabelled_pool("none", imageset, split) is None
    imageset.subsets = [""] * len(imageset)
    with caplog.at_level(logging.INFO):
        assert load_unlabelled_pool("auto", imageset, split) is None
    assert "prior_pool=folder:<path>" in caplog.text


def test_empty_auto_pool_is_one_clear_line():
    imageset, split = hand_made()
    split.train = [f"train/{c}{i}" for c in "ab" for i in range(5)]
    split.val = []
    with pytest.raises(ConfigError, match="prior_pool=auto is empty"):
        load_unlabelled_pool("auto", imageset, split)


def _png(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 12, 3), value, dtype=np.uint8)).save(path)


def test_folder_pool_reads_any_depth_and_counts_corrupt_files(tmp_path, caplog):
    imageset, split = hand_made()
    _png(tmp_path / "x.png", 10)
    _png(tmp_path / "deep" / "er" / "y.png", 200)
    (tmp_path / "deep" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING):
        pool = load_unlabelled_pool(f"folder:{tmp_path}", imageset, split)
    assert pool.ids == ["deep/er/y.png", "x.png"]
    assert pool.images.shape == (2, 1, 16, 16) and pool.images.dtype == torch.uint8
    assert pool.classes == [] and len(pool.skipped) == 1
    assert "skipped 1 unreadable of 3 images" in caplog.text


def test_folder_pool_bad_inputs_are_one_clear_line(tmp_path):
    imageset, split = hand_made()
    with pytest.raises(ConfigError, match="does not exist"):
        load_unlabelled_pool(f"folder:{tmp_path / 'missing'}", imageset, split)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="holds no readable image"):
        load_unlabelled_pool(f"folder:{tmp_path}", imageset, split)
    for spec in ("folder:", "everything"):
        with pytest.raises(ConfigError, match="prior_pool="):
            validate(GenerateConfig(prior_pool=spec))
