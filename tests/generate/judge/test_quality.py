"""The reference-classifier check of a synthetic set, on cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from eibacl.generate.judge.quality import (
    ReferenceClassifier,
    synthetic_quality,
    train_reference_classifier,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _real(n_per_class: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Three trivially separable classes: dark, mid-grey and bright 12×12 images."""
    gen = torch.Generator().manual_seed(0)
    levels = torch.tensor([20, 128, 235]).repeat_interleave(n_per_class).view(-1, 1, 1, 1)
    noise = torch.randint(-15, 16, (3 * n_per_class, 1, 12, 12), generator=gen)
    labels = torch.arange(3).repeat_interleave(n_per_class)
    return (levels + noise).clamp(0, 255).to(torch.uint8), labels


class Fixed:
    """A stand-in classifier returning given probabilities, in row order."""

    def __init__(self, probs: torch.Tensor):
        self.probs = probs

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return self.probs[: images.shape[0]]


@pytest.fixture(scope="module")
def classifier() -> ReferenceClassifier:
    images, labels = _real()
    return train_reference_classifier(images, labels, 3, epochs=8, seed=0)


def test_reference_classifier_learns_the_real_classes(classifier):
    images, labels = _real()
    probs = classifier.predict_proba(images)
    assert probs.shape == (72, 3)
    assert torch.allclose(probs.sum(dim=1), torch.ones(72), atol=1e-5)
    assert (probs.argmax(dim=1) == labels).float().mean() == 1.0


def test_variants_identical_to_sources_keep_their_class(classifier):
    images, labels = _real()
    kinds = ["id"] * 72
    strengths = [0.25, 0.5] * 36
    m = synthetic_quality(
        classifier,
        images,
        labels,
        kinds,
        ["id"] * 72,
        strengths=strengths,
        real_val_images=images,
        real_val_labels=labels,
    )
    assert m["quality/id/own_class_rate"] == 1.0
    assert m["quality/id/own_class_rate/s0.25"] == 1.0
    assert m["quality/id/own_class_rate/s0.50"] == 1.0
    assert m["quality/id/count"] == 72
    assert m["quality/real_val/accuracy"] == 1.0
    assert m["quality/id/max_softmax_mean"] == pytest.approx(m["quality/real_val/max_softmax_mean"])
    assert not any(k.startswith("quality/near_ood/") and k != "quality/near_ood/count" for k in m)


def test_near_ood_that_became_another_class(classifier):
    images, labels = _real()
    # "near-OOD" variants that are really images of the next class
    sources = labels
    variants = images[(torch.arange(72) + 24) % 72]
    assert (classifier.predict_proba(variants).argmax(1) == (sources + 1) % 3).all()
    weights = torch.nn.functional.one_hot((sources + 1) % 3, 3).float()
    m = synthetic_quality(
        classifier,
        variants,
        sources,
        ["near_ood"] * 72,
        ["other-class"] * 36 + ["class-mix@0.8"] * 36,
        class_weights=weights,
    )
    assert m["quality/near_ood/source_class_rate"] == 0.0
    assert m["quality/near_ood/other_class_rate"] == 1.0  # just images of another class
    assert m["quality/near_ood/other-class/source_class_rate"] == 0.0
    assert m["quality/near_ood/class-mix/s0.80/other_class_rate"] == 1.0


def test_softmax_and_entropy_statistics():
    k = 4
    uniform = torch.full((2, k), 1 / k)
    sure = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    probs = torch.cat([sure, uniform])
    m = synthetic_quality(
        Fixed(probs),
        torch.zeros(4, 1, 2, 2, dtype=torch.uint8),
        torch.tensor([0, 0, 1, 1]),
        ["id", "id", "near_ood", "near_ood"],
        ["id", "id", "high-strength", "high-strength"],
    )
    assert m["quality/id/own_class_rate"] == 0.5
    assert m["quality/id/max_softmax_mean"] == pytest.approx(1.0)
    assert m["quality/id/entropy_mean"] == pytest.approx(0.0, abs=1e-6)
    assert m["quality/near_ood/max_softmax_mean"] == pytest.approx(0.25)
    assert m["quality/near_ood/entropy_mean"] == pytest.approx(math.log(k))
    assert m["quality/near_ood/high-strength/entropy_mean"] == pytest.approx(math.log(k))


def test_input_errors():
    probs = torch.full((2, 2), 0.5)
    with pytest.raises(ValueError, match="same length"):
        synthetic_quality(Fixed(probs), torch.zeros(2, 1, 2, 2), torch.tensor([0]), ["id"], ["id"])
    with pytest.raises(ValueError, match="kinds"):
        synthetic_quality(
            Fixed(probs), torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), ["id", "x"], ["id", "id"]
        )
    with pytest.raises(ValueError, match="uint8"):
        train_reference_classifier(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), 2)
