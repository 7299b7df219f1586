"""Training with a synthetic set: DA-Fusion positives, near-OOD negatives, fingerprints."""

from __future__ import annotations

import dataclasses
import math

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from eibacl.config import ConfigError, PretrainConfig
from eibacl.data.training_data import prepare_data
from eibacl.generate.dafusion.synthetic_set import SyntheticSet
from eibacl.train.batches import Batch
from eibacl.train.objectives import SupConObjective
from eibacl.train.pretrain import pretrain
from eibacl.train.synthetic import build_pool, load_pool, resolve_set
from tests import tiny


@pytest.fixture(scope="module")
def synthetic_config(tmp_path_factory) -> PretrainConfig:
    return PretrainConfig(
        **tiny.data(shots=6, val_per_class=6, test_per_class=10)
        | tiny.training(batch_size=16)
        | tiny.generation(num_synthetic=2, strength="0.5", near_ood_recipes="class-mix"),
        near_ood_per_batch=8,
    )


@pytest.fixture(scope="module")
def synthetic_run(synthetic_config):
    """One pretrain run with positives+negatives; it generates the set (nested run)."""
    result = pretrain(synthetic_config)
    return result


def _reference_supcon(z: torch.Tensor, labels: torch.Tensor, negatives: torch.Tensor, t: float):
    """Slow, obvious L_out over anchors z (A x D) with extra contrast-only rows."""
    total, count = 0.0, 0
    for i in range(len(z)):
        positives = [p for p in range(len(z)) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(math.exp(float(z[i] @ z[a]) / t) for a in range(len(z)) if a != i)
        denominator += sum(math.exp(float(z[i] @ n) / t) for n in negatives)
        term = sum(math.log(math.exp(float(z[i] @ z[p]) / t) / denominator) for p in positives)
        total += -term / len(positives)
        count += 1
    return total / count


class _FixedViews(torch.nn.Module):
    """Embeds each image to a fixed unit vector (its mean pixel decides the direction)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.nn.functional.normalize(torch.cat([torch.cos(6 * m), torch.sin(6 * m)], 1))


def test_near_ood_changes_the_loss_only_through_the_denominators():
    torch.manual_seed(0)
    images = torch.randint(0, 255, (6, 1, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    negatives = torch.randint(0, 255, (4, 1, 8, 8), dtype=torch.uint8)
    objective = SupConObjective(_FixedViews(), temperature=0.5)
    # identical augmentation draws for both calls
    with_neg, n_with = objective(
        Batch(images, labels, negatives=negatives), torch.Generator().manual_seed(1), "cpu"
    )
    without, n_without = objective(Batch(images, labels), torch.Generator().manual_seed(1), "cpu")
    assert n_with == n_without + 4
    # Recompute both from the same embeddings with the loop reference.
    from eibacl.data.transforms import augment

    g = torch.Generator().manual_seed(1)
    views = torch.cat([augment(images, g), augment(images, g)])
    neg_views = augment(negatives, g)
    z = _FixedViews()(views).double()
    zn = _FixedViews()(neg_views).double()
    anchor_labels = labels.repeat(2)
    assert with_neg.item() == pytest.approx(_reference_supcon(z, anchor_labels, zn, 0.5), rel=1e-5)
    assert without.item() == pytest.approx(_reference_supcon(z, anchor_labels, [], 0.5), rel=1e-5)
    assert with_neg.item() > without.item()  # more mass in every denominator, same numerators


def test_positives_plus_negatives_run_records_its_set(synthetic_run, synthetic_config):
    run = MlflowClient().get_run(synthetic_run.run_id)
    assert run.data.tags["eibacl.synthetic"] == "positives+negatives"
    assert run.data.tags["eibacl.synthetic_set"]
    assert run.data.params["synthetic_fingerprint"]
    shots, classes = synthetic_config.shots, 5  # 10 - 3 ood_classes - 2 ood_val_classes
    assert run.data.metrics["synthetic/id_count"] == shots * classes * 2
    assert run.data.metrics["synthetic/near_ood_count"] == shots * classes * 1
    assert run.data.metrics["train/synthetic_drawn"] > 0
    # The set was made by exactly one generate run: nested in this run, or in an earlier test's
    # run with the same settings, in any experiment of the session's store (then this run
    # finds the set in the cache and starts no generate run).
    key, folder = run.data.tags["eibacl.synthetic_set"], run.data.tags["eibacl.synthetic_set_dir"]
    makers = [
        r
        for r in mlflow.search_runs(
            search_all_experiments=True,
            filter_string="tags.`eibacl.entry_point` = 'generate'",
            output_format="list",
        )
        if r.data.tags.get("eibacl.synthetic_set_dir") == folder
        and r.data.metrics.get("synthetic/reused") == 0.0
    ]
    assert len(makers) == 1 and makers[0].data.tags["eibacl.synthetic_set"] == key[:16]
    children = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{synthetic_run.run_id}'", output_format="list"
    )
    made_here = makers[0].data.tags.get("mlflow.parentRunId") == synthetic_run.run_id
    expected = ["generate"] if made_here else []
    assert [c.data.tags["eibacl.entry_point"] for c in children] == expected


def test_pool_holds_only_synthetic_images_of_training_sources(synthetic_run, synthetic_config):
    data = prepare_data(synthetic_config)
    folder = resolve_set(synthetic_config, data)
    synthetic = SyntheticSet.open(folder)
    assert set(synthetic.source_ids) <= set(data.split.train)
    pool = build_pool(synthetic, data)
    held_out = data.side("ood_test")[0].flatten(1)
    held_out_val = data.side("ood_val")[0].flatten(1)
    for image in pool.near_ood.flatten(1):
        assert not (held_out == image).all(1).any()
        assert not (held_out_val == image).all(1).any()
    for i, variants in enumerate(pool.variants):
        assert len(variants) == synthetic_config.num_synthetic
        assert not (variants == data.train_x[i]).all()  # variants, not copies


def test_alpha_zero_reproduces_the_none_run(synthetic_run, synthetic_config):
    base = dataclasses.replace(synthetic_config, epochs=1, eval_every=0)
    none = pretrain(dataclasses.replace(base, synthetic="none"))
    zero = pretrain(dataclasses.replace(base, synthetic="positives", alpha=0.0))
    assert zero.metrics["train/synthetic_drawn"] == 0
    assert zero.metrics["train/loss"] == none.metrics["train/loss"]
    for a, b in zip(none.encoder.parameters(), zero.encoder.parameters()):
        assert torch.equal(a, b)


def test_set_from_another_split_is_refused(synthetic_run, synthetic_config):
    data = prepare_data(synthetic_config)
    folder = resolve_set(synthetic_config, data)
    other = dataclasses.replace(synthetic_config, split_seed=1, synthetic_set=str(folder))
    with mlflow.start_run():
        with pytest.raises(ConfigError, match="other data or another split"):
            load_pool(other, prepare_data(other))


def test_set_without_near_ood_is_refused_for_negatives(synthetic_run, synthetic_config):
    config = dataclasses.replace(synthetic_config, num_near_ood=0, synthetic="positives")
    data = prepare_data(config)
    with mlflow.start_run(nested=mlflow.active_run() is not None):
        folder = resolve_set(config, data)
    wrong = dataclasses.replace(config, synthetic="positives+negatives", synthetic_set=str(folder))
    with mlflow.start_run():
        with pytest.raises(ConfigError, match="needs near-OOD images"):
            load_pool(wrong, data)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_outside_unit_interval_is_refused(alpha):
    with pytest.raises(ConfigError, match="alpha"):
        PretrainConfig(alpha=alpha)


def test_positive_mode_is_a_parameter_and_extra_view_trains(synthetic_run, synthetic_config):
    with pytest.raises(ConfigError, match="positive_mode='bogus'"):
        dataclasses.replace(synthetic_config, positive_mode="bogus")
    config = dataclasses.replace(
        synthetic_config, positive_mode="extra-view", synthetic="positives", epochs=1
    )
    result = pretrain(config)
    run = MlflowClient().get_run(result.run_id)
    assert run.data.params["positive_mode"] == "extra-view"
    assert run.data.metrics["train/synthetic_drawn"] > 0


def _expected_filter_counts(synthetic: SyntheticSet, passes, per_image: int) -> dict[str, int]:
    """By hand: per kind, what the judge rejects, what passes and fits `per_image` per
    source image, and what passes but is over that number."""
    import numpy as np

    near = synthetic.is_near_ood.numpy()
    source = np.array([r.source_id for r in synthetic.rows])
    counts = {}
    for kind, rows in (("id", ~near), ("near_ood", near)):
        passed = rows & passes
        kept = sum(min(per_image, int((passed & (source == s)).sum())) for s in set(source))
        counts[kind] = kept
        counts[f"{kind}_dropped"] = int((rows & ~passes).sum())
        counts[f"{kind}_over_cap"] = int(passed.sum()) - kept
    return counts


def _check_filter(config: PretrainConfig, synthetic: SyntheticSet, passes) -> None:
    """load_pool keeps exactly the hand count, or - when it keeps no ID variant or no
    near-OOD image (both needed by positives+negatives) - stops naming the counts and the fix."""
    data = prepare_data(config)
    expected = _expected_filter_counts(synthetic, passes, config.num_synthetic)
    if expected["id"] == 0 or expected["near_ood"] == 0:
        passed = expected["id"] + expected["id_over_cap"]
        said = f"passed {passed} of {passed + expected['id_dropped']} ID variants and kept "
        with pytest.raises(ConfigError, match=f"{said}{expected['id']} .*oversample=4"):
            with mlflow.start_run():
                load_pool(config, data)
        return
    with mlflow.start_run():
        pool = load_pool(config, data)
    assert pool.counts == expected
    assert max(len(v) for v in pool.variants) <= config.num_synthetic


@pytest.mark.parametrize(
    ("pattern", "per_image"), [("two in three", 2), ("two in three", 1), ("nothing", 2)]
)
def test_judge_filter_counts_rejections_and_the_per_image_cap_apart(
    synthetic_run, synthetic_config, tmp_path, pattern, per_image
):
    """Verdicts written by hand on a copy of the set. With per_image=1 some images that
    pass are over the cap; the counts must say which was which. A filter that passes
    nothing stops with the counts and the fix."""
    import shutil

    import numpy as np

    from eibacl.generate.judge.judge import JUDGE_FILE, Verdicts, save_verdicts

    folder = tmp_path / "set"
    shutil.copytree(resolve_set(synthetic_config, prepare_data(synthetic_config)), folder)
    synthetic = SyntheticSet.open(folder)
    n = len(synthetic)
    near = synthetic.is_near_ood.numpy()
    passes = np.arange(n) % 3 != 0 if pattern == "two in three" else np.zeros(n, bool)
    save_verdicts(
        folder / JUDGE_FILE,
        Verdicts({"mahalanobis": np.zeros(n)}, passes, np.ones(n, bool), passes & near),
    )
    config = dataclasses.replace(
        synthetic_config,
        synthetic_filter="judge",
        synthetic_set=str(folder),
        num_synthetic=per_image,
        num_near_ood=per_image,
    )
    _check_filter(config, synthetic, passes)
    if per_image == 1:  # the pattern puts two passing variants on some images
        over = _expected_filter_counts(synthetic, passes, 1)
        assert over["id_over_cap"] + over["near_ood_over_cap"] > 0


def test_judge_filter_keeps_only_what_the_judge_passes(synthetic_run, synthetic_config):
    """The judge's real verdicts, as generate wrote them: ID variants that stay ID and keep
    their class, near-OOD images in the band. (The tiny generator's images pass nothing, so
    this takes the error path; the kept path has hand-written verdicts above.)"""
    import numpy as np

    from eibacl.generate.judge.judge import JUDGE_FILE, load_verdicts

    folder = resolve_set(synthetic_config, prepare_data(synthetic_config))
    synthetic = SyntheticSet.open(folder)
    v = load_verdicts(folder / JUDGE_FILE)
    passes = np.where(synthetic.is_near_ood.numpy(), v.in_band, v.stays_id & v.keeps_class)
    _check_filter(
        dataclasses.replace(synthetic_config, synthetic_filter="judge"), synthetic, passes
    )


def test_synthetic_set_is_a_dataset_input_of_the_run(synthetic_run, synthetic_config):
    """The set as MLflow records it: its content key, counts by kind, the generator."""
    run = MlflowClient().get_run(synthetic_run.run_id)
    (found,) = [
        d
        for d in run.inputs.dataset_inputs
        if {t.key: t.value for t in d.tags}.get("mlflow.data.context") == "synthetic"
    ]
    tags = {t.key: t.value for t in found.tags}
    shots, classes = synthetic_config.shots, 5
    assert tags["id_count"] == str(shots * classes * 2)
    assert tags["near_ood_count"] == str(shots * classes * 1)
    assert tags["generator"] == "ddpm" and tags["generator_fingerprint"]
    assert run.data.tags["eibacl.synthetic_set"].startswith(found.dataset.digest[:16])
