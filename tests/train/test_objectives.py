"""What each method minimises on a batch: SupCon with near-OOD negatives, cross-entropy with
outlier exposure."""

from __future__ import annotations

import pytest
import torch

from eibacl.models.encoders import build_encoder
from eibacl.models.heads import ClassifierNetwork, SupConNetwork
from eibacl.train.batches import Batch
from eibacl.train.objectives import CrossEntropyObjective, SupConObjective

SIZE = 16
CPU = torch.device("cpu")


def _images(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, SIZE, SIZE), generator=generator, dtype=torch.uint8)


def _supcon() -> SupConObjective:
    torch.manual_seed(0)
    network = SupConNetwork(build_encoder("resnet-small", 1, 4, SIZE), projection_dim=8)
    return SupConObjective(network.eval(), temperature=0.1)


def _batch(negatives: torch.Tensor | None = None) -> Batch:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    return Batch(images=_images(6, 1), labels=labels, negatives=negatives)


def test_supcon_with_negatives_is_finite_and_trains_the_encoder():
    objective = _supcon()
    objective.network.train()
    loss, n_inputs = objective(_batch(_images(4, 2)), torch.Generator().manual_seed(0), CPU)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert n_inputs == 2 * 6 + 4  # two views of each image, plus the negatives
    loss.backward()
    encoder_grads = [p.grad for p in objective.network.encoder.parameters()]
    assert all(g is not None for g in encoder_grads)
    assert sum(float(g.abs().sum()) for g in encoder_grads) > 0
    assert all(p.grad is not None for p in objective.network.head.parameters())


def test_negatives_enter_the_loss():
    objective = _supcon()
    without, _ = objective(_batch(None), torch.Generator().manual_seed(0), CPU)
    with_negatives, _ = objective(_batch(_images(4, 2)), torch.Generator().manual_seed(0), CPU)
    assert with_negatives > without  # more terms in every denominator


def test_no_negatives_equals_zero_negatives():
    objective = _supcon()
    none, n_none = objective(_batch(None), torch.Generator().manual_seed(0), CPU)
    empty = torch.empty(0, 1, SIZE, SIZE, dtype=torch.uint8)
    zero, n_zero = objective(_batch(empty), torch.Generator().manual_seed(0), CPU)
    assert n_none == n_zero == 12
    assert torch.allclose(none, zero, atol=1e-6)


def test_supcon_extra_views_are_a_third_view():
    objective = _supcon()
    batch = _batch()
    batch.extra_views = _images(6, 3)
    loss, n_inputs = objective(batch, torch.Generator().manual_seed(0), CPU)
    assert n_inputs == 18 and torch.isfinite(loss)


def test_cross_entropy_outlier_exposure_only_with_weight_and_negatives():
    torch.manual_seed(0)
    network = ClassifierNetwork(build_encoder("resnet-small", 1, 4, SIZE), num_classes=3).eval()
    plain = CrossEntropyObjective(network, oe_weight=0.0)
    oe = CrossEntropyObjective(network, oe_weight=0.5)
    base, n_base = plain(_batch(_images(4, 2)), torch.Generator().manual_seed(0), CPU)
    assert n_base == 6  # weight 0: negatives are not even forwarded
    with_oe, n_oe = oe(_batch(_images(4, 2)), torch.Generator().manual_seed(0), CPU)
    assert n_oe == 10
    assert torch.isfinite(with_oe) and with_oe > base
    # outlier exposure is bounded below by log(num_classes) per outlier
    assert (with_oe - base).item() >= 0.5 * float(torch.log(torch.tensor(3.0))) - 1e-5
    no_negatives, _ = oe(_batch(None), torch.Generator().manual_seed(0), CPU)
    assert no_negatives.item() == pytest.approx(base.item())
    empty = torch.empty(0, 1, SIZE, SIZE, dtype=torch.uint8)
    zero, n_zero = oe(_batch(empty), torch.Generator().manual_seed(0), CPU)
    assert n_zero == 6 and zero.item() == pytest.approx(base.item())


def test_objectives_draw_views_with_the_runs_augmentation_settings():
    """crop_scale reaches the views: with every random transform switched off the loss no
    longer depends on the augmentation seed; with the defaults it does."""
    from eibacl.data.transforms import AugmentSettings, training_augmentation

    still = AugmentSettings(
        scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0, brightness=0, contrast=0, saturation=0
    )
    torch.manual_seed(0)
    encoder = build_encoder("resnet-small", 1, 4, SIZE)
    objectives = {
        "supcon": lambda a: SupConObjective(SupConNetwork(encoder, 8).eval(), 0.1, None, a),
        "ce": lambda a: CrossEntropyObjective(ClassifierNetwork(encoder, 3).eval(), 0.0, None, a),
    }
    for name, make in objectives.items():
        fixed = make(still)
        a, _ = fixed(_batch(), torch.Generator().manual_seed(0), CPU)
        b, _ = fixed(_batch(), torch.Generator().manual_seed(1), CPU)
        assert torch.allclose(a, b), name
        moving = make(training_augmentation(0.4))
        c, _ = moving(_batch(), torch.Generator().manual_seed(0), CPU)
        d, _ = moving(_batch(), torch.Generator().manual_seed(1), CPU)
        assert not torch.allclose(c, d), name
    assert training_augmentation(0.7).scale == (0.7, 1.0)
