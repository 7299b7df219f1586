"""Attach a synthetic set to a training run.

The set is given by reference (`synthetic_set` = a generate run id or a set folder) or
found/made from the run's own generation parameters through the generation cache. It
must have been made from this run's data and split: its recorded fingerprints are
checked. In-distribution variants become `SyntheticPool.variants` (aligned with the
training images), near-OOD images `SyntheticPool.near_ood` (negatives only).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from eibacl import tracking
from eibacl.config import (
    ConfigError,
    GenerateRunConfig,
    needs_synthetic_set,
    synthetic_components,
)
from eibacl.generate.synthetic_set import SyntheticSet, is_complete
from eibacl.train.batches import SyntheticPool
from eibacl.train.data import TrainingData

log = logging.getLogger(__name__)


def load_pool(config: Any, data: TrainingData) -> SyntheticPool | None:
    """The synthetic images a run trains with; None when its mode uses none (`none`, or
    `features` alone: feature negatives are made in training, so no set is generated)."""
    mode = getattr(config, "synthetic", "none")
    components = synthetic_components(mode)
    if not needs_synthetic_set(mode):
        return None
    folder = resolve_set(config, data)
    synthetic = SyntheticSet.open(folder)
    check_fingerprints(synthetic, data, folder)
    pool = build_pool(synthetic, data)
    if "negatives" in components and len(pool.near_ood) == 0:
        raise ConfigError(
            f"synthetic={mode} needs near-OOD images, but the set {folder} has none:"
            " generate with -P num_near_ood=2 (or more), or drop negatives from synthetic"
        )
    if "positives" in components and not any(len(v) for v in pool.variants) and config.alpha > 0:
        raise ConfigError(
            f"the synthetic set {folder} has no in-distribution variants: generate with "
            "-P num_synthetic=4 (or more), or use synthetic=none"
        )
    tracking.set_tags(
        {"eibacl.synthetic_set": pool.set_id, "eibacl.synthetic_set_dir": str(folder)}
    )
    tracking.log_params({"synthetic_fingerprint": pool.fingerprint})
    tracking.log_metrics(
        {
            "synthetic/id_count": pool.counts["id"],
            "synthetic/near_ood_count": pool.counts["near_ood"],
        }
    )
    return pool


def generation_config(config: Any) -> GenerateRunConfig:
    """The generate parameters embedded in a pretrain/baseline config."""
    names = {f.name for f in dataclasses.fields(GenerateRunConfig)}
    return GenerateRunConfig(**{n: getattr(config, n) for n in names if hasattr(config, n)})


def resolve_set(config: Any, data: TrainingData) -> Path:
    reference = getattr(config, "synthetic_set", "")
    if reference:
        return _referenced_set(reference)
    from eibacl.generate.pipeline import generate, lookup_synthetic_set

    gen_config = generation_config(config)
    found = lookup_synthetic_set(gen_config, data)
    if found is not None:
        return found
    log.info("no synthetic set for these settings yet: generating it (nested generate run)")
    return generate(gen_config, nested=True).set_dir


def _referenced_set(reference: str) -> Path:
    path = Path(reference).expanduser()
    if path.is_dir():
        if not is_complete(path):
            raise ConfigError(
                f"synthetic_set={reference} is incomplete: run the same generate again to finish"
            )
        return path
    run = tracking.get_run(reference)
    folder = run.data.tags.get("eibacl.synthetic_set_dir")
    if not folder:
        raise ConfigError(f"run {reference} is not a generate run (no synthetic set recorded)")
    if not is_complete(Path(folder)):
        raise ConfigError(
            f"the synthetic set of run {reference} ({folder}) is missing or incomplete on this "
            "machine: run generate again with the same parameters"
        )
    return Path(folder)


def check_fingerprints(synthetic: SyntheticSet, data: TrainingData, folder: Path) -> None:
    key = synthetic.settings.get("key", {})
    expected = {
        "data_fingerprint": data.split.source_fingerprint,
        "split_fingerprint": data.split.fingerprint(),
    }
    for name, value in expected.items():
        if key.get(name) != value:
            raise ConfigError(
                f"the synthetic set {folder} was made from other data or another split "
                f"({name} {str(key.get(name))[:12]} != {value[:12]}): leave synthetic_set empty "
                "to make the matching set, or train with that set's data parameters"
            )


def build_pool(synthetic: SyntheticSet, data: TrainingData) -> SyntheticPool:
    position = {image_id: i for i, image_id in enumerate(data.split.train)}
    empty = data.train_x[:0]
    per_source: list[list[int]] = [[] for _ in data.split.train]
    near: list[int] = []
    for row_index, row in enumerate(synthetic.rows):
        if row.kind == "near_ood":
            near.append(row_index)
        elif row.source_id in position:
            per_source[position[row.source_id]].append(row_index)
    variants = [synthetic.images[rows] if rows else empty for rows in per_source]
    for i, rows in enumerate(per_source):
        labels = {synthetic.rows[r].label for r in rows}
        if labels and labels != {int(data.train_y[i])}:
            raise ValueError(
                f"synthetic variants of {data.split.train[i]} carry labels {labels}, the image "
                f"has {int(data.train_y[i])}: the set belongs to another class order"
            )
    return SyntheticPool(
        variants=variants,
        near_ood=synthetic.images[near] if near else empty,
        set_id=synthetic.settings.get("key_digest", "")[:16],
        fingerprint=synthetic.settings.get("key_digest", ""),
        counts={"id": sum(len(r) for r in per_source), "near_ood": len(near)},
    )
