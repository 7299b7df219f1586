"""Feature-space negatives (`synthetic` with `features`): boundary selection against a slow
loop, contrast-only use in SupCon, bit-exact `none` at 0 per batch, and the entry points."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient

from eibacl.config import (
    CompareParams,
    ConfigError,
    PretrainConfig,
    needs_synthetic_set,
    synthetic_components,
)
from eibacl.models.encoders import build_encoder
from eibacl.models.heads import ClassifierNetwork, SupConNetwork
from eibacl.models.losses.supcon import supcon_loss
from eibacl.train.batches import Batch
from eibacl.train.feature_negatives import FeatureNegatives, boundary_mask, synthesize
from eibacl.train.objectives import CrossEntropyObjective, SupConObjective

CPU = torch.device("cpu")
SIZE = 16


def _slow_boundary(z: np.ndarray, labels: np.ndarray, quantile: float) -> list[bool]:
    """The obvious loop: per class, cosine distance to the normalised mean of unit rows."""
    unit = [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in z.tolist()]
    out = [False] * len(unit)
    for label in sorted(set(labels.tolist())):
        members = [i for i in range(len(unit)) if labels[i] == label]
        mean = [sum(unit[i][d] for i in members) / len(members) for d in range(z.shape[1])]
        norm = math.sqrt(sum(v * v for v in mean))
        center = [v / norm for v in mean]
        distance = [1.0 - sum(a * b for a, b in zip(unit[i], center)) for i in members]
        threshold = float(np.quantile(np.array(distance), quantile))
        for i, d in zip(members, distance):
            out[i] = d >= threshold
    return out


@pytest.mark.parametrize("quantile", [0.0, 0.5, 0.8, 0.95])
def test_boundary_mask_matches_a_slow_loop(quantile):
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(40, 5, generator=generator, dtype=torch.float64) * 2.0
    labels = torch.randint(0, 3, (40,), generator=generator)
    expected = _slow_boundary(z.numpy(), labels.numpy(), quantile)
    assert boundary_mask(z, labels, quantile).tolist() == expected
    assert any(expected)


def test_boundary_by_hand_on_a_line():
    # class 0 at angles 0, 10, 20, 60 degrees: the mean direction is near 22 degrees,
    # so 60 degrees is farthest; class 1 is one point (its own boundary).
    angles = torch.tensor([0.0, 10.0, 20.0, 60.0, 90.0]).deg2rad()
    z = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 0, 0, 0, 1])
    assert boundary_mask(z, labels, 0.75).tolist() == [False, False, False, True, True]


def test_synthesised_negatives_are_unit_norm_detached_and_seeded_at_the_boundary():
    generator = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(30, 8, generator=generator), dim=1).requires_grad_()
    labels = torch.arange(30) % 3
    out, seeds = synthesize(z, labels, 50, 0.0, 0.8, torch.Generator().manual_seed(1))
    assert out.shape == (50, 8) and not out.requires_grad
    assert torch.allclose(out.norm(dim=1), torch.ones(50), atol=1e-6)
    assert boundary_mask(z, labels, 0.8)[seeds].all()
    assert torch.allclose(out, z.detach()[seeds], atol=1e-6)  # noise 0: the seeds themselves
    noisy, at = synthesize(z, labels, 2000, 0.1, 0.8, torch.Generator().manual_seed(1))
    cosine = (noisy * z.detach()[at]).sum(dim=1)
    # |noise| ~ 0.1 * sqrt(8) = 0.28: cosine with the seed ~ 1 / sqrt(1 + 0.08) = 0.96
    assert cosine.mean().item() == pytest.approx(1 / math.sqrt(1 + 0.08), abs=0.01)


def test_zero_per_batch_draws_nothing_from_the_generator():
    generator = torch.Generator().manual_seed(5)
    before = generator.get_state()
    out, _ = synthesize(torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2]), 0, 0.1, 0.8, generator)
    assert out.shape == (0, 4) and torch.equal(generator.get_state(), before)


def _images(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, SIZE, SIZE), generator=generator, dtype=torch.uint8)


def _supcon(features: FeatureNegatives | None) -> SupConObjective:
    torch.manual_seed(0)
    network = SupConNetwork(build_encoder("resnet-small", 1, 4, SIZE), projection_dim=8)
    return SupConObjective(network.eval(), 0.1, features)


BATCH = Batch(images=_images(6, 1), labels=torch.tensor([0, 0, 1, 1, 2, 2]))


def test_zero_feature_negatives_equal_none_bit_exactly():
    none, n_none = _supcon(None)(BATCH, torch.Generator().manual_seed(0), CPU)
    zero_objective = _supcon(FeatureNegatives(0, 0.1, 0.8))
    zero, n_zero = zero_objective(BATCH, torch.Generator().manual_seed(0), CPU)
    assert torch.equal(none, zero) and n_none == n_zero
    assert zero_objective.last_feature_negatives == 0


def test_feature_negatives_only_enter_the_denominators(monkeypatch):
    seen = {}

    def recording(features, labels, temperature, contrast_only=None):
        seen.update(features=features, labels=labels, contrast=contrast_only)
        return supcon_loss(features, labels, temperature, contrast_only)

    monkeypatch.setattr("eibacl.train.objectives.supcon_loss", recording)
    objective = _supcon(FeatureNegatives(16, 0.1, 0.5))
    negatives = _images(4, 2)
    batch = dataclasses.replace(BATCH, negatives=negatives)
    loss, _ = objective(batch, torch.Generator().manual_seed(0), CPU)
    # anchors and positives: only the 6 real images x 2 views
    assert seen["features"].shape[:2] == (6, 2) and seen["labels"].tolist() == [0, 0, 1, 1, 2, 2]
    # contrast-only: 4 near-OOD projections, then 16 detached feature negatives
    assert seen["contrast"].shape[0] == 4 + 16 and objective.last_feature_negatives == 16
    # the loss equals L_out with the same contrast set computed independently
    expected = supcon_loss(seen["features"], seen["labels"], 0.1, seen["contrast"])
    assert torch.equal(loss, expected)
    without = supcon_loss(seen["features"], seen["labels"], 0.1, seen["contrast"][:4])
    assert loss > without  # 16 more terms in every denominator


def test_ce_with_features_adds_outlier_exposure_on_the_head_only():
    torch.manual_seed(0)
    network = ClassifierNetwork(build_encoder("resnet-small", 1, 4, SIZE), 3)
    plain = CrossEntropyObjective(network, 0.5)
    base, _ = plain(BATCH, torch.Generator().manual_seed(0), CPU)
    objective = CrossEntropyObjective(network, 0.5, FeatureNegatives(8, 0.1, 0.8))
    loss, n = objective(BATCH, torch.Generator().manual_seed(0), CPU)
    assert n == 6 and objective.last_feature_negatives == 8
    assert loss > base  # uniform cross-entropy >= log(3) > 0 is added
    zero = CrossEntropyObjective(network, 0.5, FeatureNegatives(0, 0.1, 0.8))
    assert torch.equal(zero(BATCH, torch.Generator().manual_seed(0), CPU)[0], base)


@pytest.mark.parametrize(
    "text,components",
    [
        ("none", ()),
        ("positives", ("positives",)),
        ("positives+negatives", ("positives", "negatives")),
        ("features", ("features",)),
        ("positives+features", ("positives", "features")),
        ("positives+negatives+features", ("positives", "negatives", "features")),
    ],
)
def test_synthetic_modes_parse_into_components(text, components):
    assert synthetic_components(text) == components
    assert PretrainConfig(synthetic=text).synthetic == text
    assert needs_synthetic_set(text) == bool(set(components) & {"positives", "negatives"})


@pytest.mark.parametrize(
    "text", ["", "feature", "positives+", "features+positives", "positives+positives", "none+x"]
)
def test_bad_synthetic_modes_name_the_parameter(text):
    with pytest.raises(ConfigError, match="synthetic="):
        PretrainConfig(synthetic=text)
    with pytest.raises(ConfigError, match="modes="):
        CompareParams(modes=f"none,{text}").validate()


@pytest.mark.parametrize(
    "name,value",
    [("feature_negatives_per_batch", -1), ("feature_noise", -0.1), ("feature_noise", math.nan)]
    + [("feature_boundary_quantile", q) for q in (-0.1, 1.0)],
)
def test_bad_feature_parameters_name_themselves(name, value):
    with pytest.raises(ConfigError, match=name):
        PretrainConfig(**{name: value})


def test_pretrain_with_features_makes_no_set_and_logs_the_count(
    fresh_experiment, tiny_pretrain_config, monkeypatch
):
    from eibacl.generate import pipeline
    from eibacl.train.pretrain import pretrain

    monkeypatch.setattr(pipeline, "generate", lambda *a, **k: pytest.fail("generated a set"))
    config = dataclasses.replace(
        tiny_pretrain_config, synthetic="features", feature_negatives_per_batch=8
    )
    result = pretrain(config)
    history = MlflowClient().get_metric_history(result.run_id, "train/feature_negatives")
    batches = (config.shots * 5) // config.batch_size  # 5 in-distribution classes
    assert sorted((m.step, m.value) for m in history) == [
        (epoch, 8.0 * batches) for epoch in range(1, config.epochs + 1)
    ]
    assert result.metrics["train/synthetic_drawn"] == 0


def test_baseline_with_features_runs(fresh_experiment, fresh_registry, tiny_baseline_config):
    from eibacl.train.baseline import baseline

    config = dataclasses.replace(tiny_baseline_config, synthetic="features", epochs=1)
    result = baseline(config)
    assert result.metrics["train/feature_negatives"] > 0
    assert 0.0 <= result.metrics["ood/near/knn/auroc"] <= 1.0
