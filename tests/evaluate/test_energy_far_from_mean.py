"""Why near-OOD energy AUROC can fall far below 0.5 (0.03 on a folder of car parts) while
Mahalanobis reads 0.90: energy (and MSP) read the linear probe's logits, which grow with
the distance from the training mean along the class directions. Held-out classes lying
*beyond* the known ones (larger, brighter, higher contrast, another background) get larger
logits, so they score as more in-distribution than the test set. The sign is right: on
OOD images inside the class region, energy ranks them below the test set."""

from __future__ import annotations

import torch

from eibacl.evaluate.linear_probe import train_linear_probe
from eibacl.evaluate.ood_metrics import auroc
from eibacl.evaluate.scorers import energy_score, fit_mahalanobis, mahalanobis_score


def clusters(centres: torch.Tensor, n: int, spread: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return centres.repeat_interleave(n, 0) + spread * torch.randn(len(centres) * n, 2, generator=g)


def test_energy_inverts_for_ood_beyond_the_classes_and_not_for_ood_between_them():
    centres = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])  # three classes, radius 2
    labels = torch.arange(3).repeat_interleave(60)
    train = clusters(centres, 60, 0.4, 0)
    test = clusters(centres, 60, 0.4, 1)
    probe = train_linear_probe(train, labels, clusters(centres, 20, 0.4, 2), labels[::3], 3)
    maha = fit_mahalanobis(train, labels)

    def aurocs(ood: torch.Tensor) -> tuple[float, float]:
        energy = auroc(energy_score(probe.logits(test)), energy_score(probe.logits(ood)))
        distance = auroc(mahalanobis_score(maha, test), mahalanobis_score(maha, ood))
        return energy, distance

    # Beyond the classes (3x their radius, same directions): far from every class mean,
    # Mahalanobis sees it; the logits are larger than any test image's, energy inverts.
    energy, distance = aurocs(clusters(3 * centres, 30, 0.4, 3))
    assert distance > 0.95 and energy < 0.05
    # Between the classes (at the origin): low logits, energy ranks it correctly.
    energy, distance = aurocs(clusters(torch.zeros(1, 2), 90, 0.4, 4))
    assert distance > 0.95 and energy > 0.95
