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

import numpy as np

from eibacl import names, tracking
from eibacl.config import (
    ConfigError,
    GenerateRunConfig,
    needs_synthetic_set,
    synthetic_components,
)
from eibacl.data.training_data import TrainingData
from eibacl.generate.dafusion.synthetic_set import SyntheticSet, is_complete
from eibacl.generate.judge.judge import JUDGE_FILE, load_verdicts
from eibacl.train.batches import SyntheticPool
from eibacl.train.retrieval import retrieval_pool

log = logging.getLogger(__name__)


def load_pool(config: Any, data: TrainingData) -> SyntheticPool | None:
    """The synthetic images a run trains with; None when its mode uses none (`none`, or
    `features` alone: feature negatives are made in training, so no set is generated).
    With `retrieval` the variants are real pool images (`eibacl.train.retrieval`)."""
    mode = getattr(config, "synthetic", "none")
    components = synthetic_components(mode)
    if not needs_synthetic_set(mode):
        return retrieval_pool(config, data) if "retrieval" in components else None
    folder = resolve_set(config, data)
    synthetic = SyntheticSet.open(folder)
    check_fingerprints(synthetic, data, folder)
    keep = judge_keep(folder, synthetic) if config.synthetic_filter == "judge" else None
    pool = build_pool(  # the filter keeps at most the asked-for counts of what it passes
        synthetic,
        data,
        keep=keep,
        per_source=config.num_synthetic if keep is not None else None,
        near_per_source=config.num_near_ood if keep is not None else None,
    )
    if keep is not None:
        _report_filter(pool, folder, config)
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
    if "retrieval" in components:  # the set gives the negatives, the pool the variants
        retrieved = retrieval_pool(config, data)
        pool.variants, pool.counts["id"] = retrieved.variants, retrieved.counts["id"]
    tracking.set_tags({names.SET_KEY_TAG: pool.set_id, names.SET_DIR_TAG: str(folder)})
    tracking.log_params({"synthetic_fingerprint": pool.fingerprint})
    tracking.log_dataset(synthetic_dataset(synthetic, pool, folder), SYNTHETIC_CONTEXT)
    tracking.log_metrics(
        {
            "synthetic/id_count": pool.counts["id"],
            "synthetic/near_ood_count": pool.counts["near_ood"],
        }
    )
    return pool


SYNTHETIC_CONTEXT = "synthetic"


def synthetic_dataset(
    synthetic: SyntheticSet, pool: SyntheticPool, folder: Path
) -> tracking.DatasetRef:
    """The synthetic set a run trains with, as an MLflow dataset: its content key, the images
    it draws by kind, and the fingerprint of the generator that made them."""
    counts = {kind: int(pool.counts.get(kind, 0)) for kind in ("id", "near_ood")}
    return tracking.DatasetRef(
        name=f"synthetic-{pool.set_id[:8]}",
        source=f"folder:{folder}",
        digest=synthetic.settings.get("key_digest", pool.set_id),
        size=sum(counts.values()),
        tags=(
            ("id_count", str(counts["id"])),
            ("near_ood_count", str(counts["near_ood"])),
            ("generator", str(synthetic.settings.get("backend", ""))),
            ("generator_fingerprint", str(synthetic.settings.get("model_fingerprint", ""))),
        ),
    )


def generation_config(config: Any) -> GenerateRunConfig:
    """The generate parameters embedded in a pretrain/baseline config; with `oversample`
    the set holds that many times the variants, from which the filter keeps
    `num_synthetic` per image."""
    names = {f.name for f in dataclasses.fields(GenerateRunConfig)}
    values = {n: getattr(config, n) for n in names if hasattr(config, n)}
    factor = getattr(config, "oversample", 1)
    values["num_synthetic"] = values.get("num_synthetic", 0) * factor
    values["num_near_ood"] = values.get("num_near_ood", 0) * factor
    return GenerateRunConfig(**values)


def judge_keep(folder: Path, synthetic: SyntheticSet) -> np.ndarray:
    """Which images of the set the judge keeps: ID variants that stay in-distribution and
    keep their class; near-OOD images in the band between real ID and the far reference."""
    path = folder / JUDGE_FILE
    if not path.is_file():
        raise ConfigError(
            f"synthetic_filter=judge needs the judge's verdicts {path}, which are missing: run "
            "generate again with the same parameters (it adds them), or use synthetic_filter=none"
        )
    v = load_verdicts(path)
    if len(v.stays_id) != len(synthetic):
        raise ConfigError(f"{path} does not match its set ({len(v.stays_id)} != {len(synthetic)})")
    is_near = synthetic.is_near_ood.numpy()
    return np.where(is_near, v.in_band, v.stays_id & v.keeps_class)


def _report_filter(pool: SyntheticPool, folder: Path, config: Any) -> None:
    c = pool.counts

    def said(kind: str, noun: str, per_image: int) -> str:
        passed = c[kind] + c[f"{kind}_over_cap"]
        return (
            f"passed {passed} of {passed + c[f'{kind}_dropped']} {noun} and kept {c[kind]} "
            f"(<= {per_image} per image)"
        )

    line = (
        f"synthetic_filter=judge {said('id', 'ID variants', config.num_synthetic)}; "
        f"{said('near_ood', 'near-OOD images', config.num_near_ood)} of {folder.name}"
    )
    log.warning(line)
    tracking.log_metrics(
        {
            "synthetic/filter/id_kept": c["id"],
            "synthetic/filter/id_dropped": c["id_dropped"],
            "synthetic/filter/near_ood_kept": c["near_ood"],
            "synthetic/filter/near_ood_dropped": c["near_ood_dropped"],
            "synthetic/filter/id_over_cap": c["id_over_cap"],
            "synthetic/filter/near_ood_over_cap": c["near_ood_over_cap"],
        }
    )
    wanted_near = "negatives" in synthetic_components(config.synthetic)
    if c["id"] == 0 and config.alpha > 0 or wanted_near and c["near_ood"] == 0:
        raise ConfigError(
            line + ": the filter kept nothing of a kind training needs; generate more with "
            "-P oversample=4, or use synthetic_filter=none"
        )


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
    try:
        run = tracking.get_run(reference)
    except ValueError:
        raise ConfigError(
            f"synthetic_set={reference!r} is neither a set folder nor a run id of this "
            "tracking store: give a generate run's id (see the MLflow UI) or a set folder, "
            "or leave it empty to make or reuse one from the settings"
        ) from None
    folder = run.data.tags.get(names.SET_DIR_TAG)
    if not folder:
        raise ConfigError(
            f"synthetic_set={reference}: that run is not a generate run (no synthetic set "
            "recorded); give a generate run's id or a set folder"
        )
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


def build_pool(
    synthetic: SyntheticSet,
    data: TrainingData,
    *,
    keep: np.ndarray | None = None,
    per_source: int | None = None,
    near_per_source: int | None = None,
) -> SyntheticPool:
    """The training pool: at most `per_source` ID variants of each training image and
    `near_per_source` near-OOD images made from it, among the rows `keep` allows (all by
    default), in the set's order."""
    position = {image_id: i for i, image_id in enumerate(data.split.train)}
    empty = data.train_x[:0]
    by_source: list[list[int]] = [[] for _ in data.split.train]
    near_by_source: dict[str, int] = {}
    near: list[int] = []
    dropped = {"id": 0, "near_ood": 0}
    over_cap = {"id": 0, "near_ood": 0}  # passed `keep` but past the per-image number
    for row_index, row in enumerate(synthetic.rows):
        kind = "near_ood" if row.kind == "near_ood" else "id"
        if keep is not None and not keep[row_index]:
            dropped[kind] += 1
            continue
        if kind == "near_ood":
            used = near_by_source.get(row.source_id, 0)
            if near_per_source is None or used < near_per_source:
                near_by_source[row.source_id] = used + 1
                near.append(row_index)
            else:
                over_cap[kind] += 1
        elif row.source_id in position:
            rows = by_source[position[row.source_id]]
            if per_source is None or len(rows) < per_source:
                rows.append(row_index)
            else:
                over_cap[kind] += 1
    per_source_rows = by_source
    variants = [synthetic.images[rows] if rows else empty for rows in per_source_rows]
    for i, rows in enumerate(per_source_rows):
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
        counts={
            "id": sum(len(r) for r in per_source_rows),
            "near_ood": len(near),
            "id_dropped": dropped["id"],
            "near_ood_dropped": dropped["near_ood"],
            "id_over_cap": over_cap["id"],
            "near_ood_over_cap": over_cap["near_ood"],
        },
    )
