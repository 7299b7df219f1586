"""What each method minimises on a batch: SupCon (two or three views, near-OOD negatives)
and cross-entropy (one view, optional outlier exposure on near-OOD images)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eibacl.data.transforms import augment
from eibacl.models.heads import ClassifierNetwork, SupConNetwork
from eibacl.models.losses.supcon import supcon_loss
from eibacl.train.batches import Batch


class SupConObjective:
    method = "supcon"

    def __init__(self, network: SupConNetwork, temperature: float) -> None:
        self.network: nn.Module = network
        self.temperature = temperature

    def __call__(
        self, batch: Batch, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, int]:
        images = batch.images.to(device, non_blocking=True)
        views = [augment(images, generator), augment(images, generator)]
        if batch.extra_views is not None:
            views.append(augment(batch.extra_views.to(device), generator))
        n, v = len(images), len(views)
        inputs = torch.cat(views)
        if batch.negatives is not None:
            inputs = torch.cat([inputs, augment(batch.negatives.to(device), generator)])
        z = self.network(inputs).float()
        features = z[: n * v].view(v, n, -1).transpose(0, 1)
        negatives = z[n * v :] if batch.negatives is not None else None
        loss = supcon_loss(features, batch.labels.to(device), self.temperature, negatives)
        return loss, len(inputs)


class CrossEntropyObjective:
    method = "ce"

    def __init__(self, network: ClassifierNetwork, oe_weight: float = 0.0) -> None:
        self.network: nn.Module = network
        self.oe_weight = oe_weight

    def __call__(
        self, batch: Batch, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, int]:
        images = [batch.images]
        if batch.extra_views is not None:
            images.append(batch.extra_views)
        x = augment(torch.cat(images).to(device), generator)
        labels = batch.labels.to(device).repeat(len(images))
        if batch.negatives is not None and self.oe_weight > 0:
            x = torch.cat([x, augment(batch.negatives.to(device), generator)])
        logits = self.network(x).float()
        loss = F.cross_entropy(logits[: len(labels)], labels)
        if batch.negatives is not None and self.oe_weight > 0:
            outlier_logits = logits[len(labels) :]
            # Outlier exposure (Hendrycks et al. 2019): cross-entropy to the uniform distribution.
            oe = -(outlier_logits.log_softmax(dim=1)).mean(dim=1).mean()
            loss = loss + self.oe_weight * oe
        return loss, len(x)
