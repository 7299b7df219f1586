"""What each method minimises on a batch: SupCon (two or three views, near-OOD negatives)
and cross-entropy (one view, optional outlier exposure on near-OOD images).

Under torchrun the training loop sets `ddp` (the network in DistributedDataParallel): every
rank augments the whole global batch (the same random draws as one process), forwards its
own slice, and the loss is that of the global batch (see `eibacl.distributed`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eibacl import distributed
from eibacl.data.transforms import augment
from eibacl.models.heads import ClassifierNetwork, SupConNetwork
from eibacl.models.losses.supcon import supcon_loss
from eibacl.train.batches import Batch


class SupConObjective:
    method = "supcon"
    ddp: nn.Module | None = None  # set by the training loop under torchrun

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
        if self.ddp is not None:
            return self._sharded(views, batch, generator, device)
        inputs = torch.cat(views)
        has_negatives = batch.negatives is not None and len(batch.negatives) > 0
        if has_negatives:
            inputs = torch.cat([inputs, augment(batch.negatives.to(device), generator)])
        z = self.network(inputs).float()
        features = z[: n * v].view(v, n, -1).transpose(0, 1)
        negatives = z[n * v :] if has_negatives else None
        loss = supcon_loss(features, batch.labels.to(device), self.temperature, negatives)
        return loss, len(inputs)

    def _sharded(
        self,
        views: list[torch.Tensor],
        batch: Batch,
        generator: torch.Generator,
        device: torch.device,
    ) -> tuple[torch.Tensor, int]:
        """The global batch's loss from this rank's slice and every rank's embeddings."""
        has_negatives = batch.negatives is not None and len(batch.negatives) > 0
        negatives = views[0][:0]
        if has_negatives:
            negatives = augment(batch.negatives.to(device), generator)
        n, v, m = len(views[0]), len(views), len(negatives)
        _check_global_batch(n)
        lo, hi = distributed.shard_bounds(n)
        m_lo, m_hi = distributed.shard_bounds(m)
        inputs = torch.cat([view[lo:hi] for view in views] + [negatives[m_lo:m_hi]])
        z = self.ddp(inputs).float()
        k = hi - lo
        mine = z[: k * v].view(v, k, -1).transpose(0, 1).reshape(k, -1)  # k x (V * D)
        features = distributed.all_gather_with_grad(mine, distributed.shard_sizes(n))
        contrast = None
        if has_negatives:
            contrast = distributed.all_gather_with_grad(z[k * v :], distributed.shard_sizes(m))
        labels = batch.labels.to(device)
        loss = supcon_loss(features.view(n, v, -1), labels, self.temperature, contrast)
        return loss, len(inputs)


def _check_global_batch(n: int) -> None:
    if n < distributed.world_size():
        raise ValueError(
            f"a batch of {n} images cannot be split over {distributed.world_size()} processes: "
            "raise batch_size or use fewer processes"
        )


class CrossEntropyObjective:
    method = "ce"
    ddp: nn.Module | None = None  # set by the training loop under torchrun

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
        outliers = batch.negatives is not None and len(batch.negatives) > 0 and self.oe_weight > 0
        if self.ddp is not None:
            return self._sharded(x, labels, batch, generator, device, outliers)
        if outliers:
            x = torch.cat([x, augment(batch.negatives.to(device), generator)])
        logits = self.network(x).float()
        loss = F.cross_entropy(logits[: len(labels)], labels)
        if outliers:
            outlier_logits = logits[len(labels) :]
            # Outlier exposure (Hendrycks et al. 2019): cross-entropy to the uniform distribution.
            oe = -(outlier_logits.log_softmax(dim=1)).mean(dim=1).mean()
            loss = loss + self.oe_weight * oe
        return loss, len(x)

    def _sharded(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        batch: Batch,
        generator: torch.Generator,
        device: torch.device,
        outliers: bool,
    ) -> tuple[torch.Tensor, int]:
        """This rank's share of the global mean loss, scaled so that DDP's average of the
        ranks' gradients is the gradient of the global mean (its value too, averaged)."""
        negatives = augment(batch.negatives.to(device), generator) if outliers else x[:0]
        _check_global_batch(len(x))
        lo, hi = distributed.shard_bounds(len(x))
        m_lo, m_hi = distributed.shard_bounds(len(negatives))
        inputs = torch.cat([x[lo:hi], negatives[m_lo:m_hi]])
        logits = self.ddp(inputs).float()
        k, world = hi - lo, distributed.world_size()
        loss = F.cross_entropy(logits[:k], labels[lo:hi], reduction="sum") * world / len(x)
        if outliers:
            oe = -(logits[k:].log_softmax(dim=1)).mean(dim=1).sum() * world / len(negatives)
            loss = loss + self.oe_weight * oe
        return loss, len(inputs)
