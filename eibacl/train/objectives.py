"""What each method minimises on a batch: SupCon (two or three views, near-OOD negatives,
feature-space negatives) and cross-entropy (one view, optional outlier exposure on near-OOD
images and on outliers synthesised in its penultimate feature space).

Under torchrun the training loop sets `ddp` (the network in DistributedDataParallel): every
rank augments the whole global batch (the same random draws as one process), forwards its
own slice, and the loss is that of the global batch (see `eibacl.distributed`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eibacl import distributed
from eibacl.data.transforms import AugmentSettings, augment
from eibacl.models.heads import ClassifierNetwork, SupConNetwork
from eibacl.models.losses.supcon import supcon_loss
from eibacl.train.batches import Batch
from eibacl.train.feature_negatives import FeatureNegatives


class SupConObjective:
    """SupCon on two (or three) views; near-OOD images and feature negatives are contrast-only.

    Feature negatives (`features`) are synthesised from the detached projections of the
    batch's real views and joined to the near-OOD projections: every anchor's denominator,
    never an anchor, never a positive. `last_feature_negatives` counts those of the last call.
    """

    method = "supcon"
    ddp: nn.Module | None = None  # set by the training loop under torchrun

    def __init__(
        self,
        network: SupConNetwork,
        temperature: float,
        feature_negatives: FeatureNegatives | None = None,
        augmentation: AugmentSettings | None = None,
    ) -> None:
        self.network: nn.Module = network
        self.temperature = temperature
        self.augmentation = augmentation or AugmentSettings()
        self.feature_negatives = feature_negatives
        self.last_feature_negatives = 0

    def _contrast(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        negatives: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor | None:
        """The contrast-only set: near-OOD projections plus synthesised feature negatives."""
        self.last_feature_negatives = 0
        if self.feature_negatives is None or self.feature_negatives.per_batch == 0:
            return negatives
        v = features.shape[1]
        real = features.transpose(0, 1).reshape(-1, features.shape[-1])  # view-major
        synthetic = self.feature_negatives(real, labels.repeat(v), generator)
        self.last_feature_negatives = len(synthetic)
        return synthetic if negatives is None else torch.cat([negatives, synthetic])

    def __call__(
        self, batch: Batch, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, int]:
        images = batch.images.to(device, non_blocking=True)
        views = [
            augment(images, generator, self.augmentation),
            augment(images, generator, self.augmentation),
        ]
        if batch.extra_views is not None:
            views.append(augment(batch.extra_views.to(device), generator, self.augmentation))
        n, v = len(images), len(views)
        if self.ddp is not None:
            return self._sharded(views, batch, generator, device)
        inputs = torch.cat(views)
        has_negatives = batch.negatives is not None and len(batch.negatives) > 0
        if has_negatives:
            inputs = torch.cat(
                [inputs, augment(batch.negatives.to(device), generator, self.augmentation)]
            )
        z = self.network(inputs).float()
        features = z[: n * v].view(v, n, -1).transpose(0, 1)
        negatives = z[n * v :] if has_negatives else None
        labels = batch.labels.to(device)
        contrast = self._contrast(features, labels, negatives, generator)
        loss = supcon_loss(features, labels, self.temperature, contrast)
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
            negatives = augment(batch.negatives.to(device), generator, self.augmentation)
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
        features = features.view(n, v, -1)
        contrast = self._contrast(features, labels, contrast, generator)  # same on every rank
        loss = supcon_loss(features, labels, self.temperature, contrast)
        return loss, len(inputs)


def _check_global_batch(n: int) -> None:
    if n < distributed.world_size():
        raise ValueError(
            f"a batch of {n} images cannot be split over {distributed.world_size()} processes: "
            "raise batch_size or use fewer processes"
        )


class CrossEntropyObjective:
    """Cross-entropy, plus outlier exposure (uniform target, `oe_weight`) on near-OOD images
    and, with `features`, on outliers synthesised in the penultimate feature space (VOS-style:
    detached, so only the classifier head learns from them)."""

    method = "ce"
    ddp: nn.Module | None = None  # set by the training loop under torchrun

    def __init__(
        self,
        network: ClassifierNetwork,
        oe_weight: float = 0.0,
        feature_negatives: FeatureNegatives | None = None,
        augmentation: AugmentSettings | None = None,
    ) -> None:
        self.network: nn.Module = network
        self.oe_weight = oe_weight
        self.feature_negatives = feature_negatives
        self.augmentation = augmentation or AugmentSettings()
        self.last_feature_negatives = 0

    def __call__(
        self, batch: Batch, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, int]:
        images = [batch.images]
        if batch.extra_views is not None:
            images.append(batch.extra_views)
        x = augment(torch.cat(images).to(device), generator, self.augmentation)
        labels = batch.labels.to(device).repeat(len(images))
        outliers = batch.negatives is not None and len(batch.negatives) > 0 and self.oe_weight > 0
        synthesise = (
            self.feature_negatives is not None
            and self.feature_negatives.per_batch > 0
            and self.oe_weight > 0
        )
        self.last_feature_negatives = 0
        if self.ddp is not None:
            if synthesise:
                raise ValueError(
                    "synthetic with features is not available for the CE baseline under "
                    "torchrun: run the baseline in one process or drop features"
                )
            return self._sharded(x, labels, batch, generator, device, outliers)
        if outliers:
            x = torch.cat([x, augment(batch.negatives.to(device), generator, self.augmentation)])
        if synthesise:  # the penultimate features are needed: run the two halves
            features = self.network.encoder(x)
            logits = self.network.classifier(features).float()
        else:
            logits = self.network(x).float()
        loss = F.cross_entropy(logits[: len(labels)], labels)
        if outliers:
            loss = loss + self.oe_weight * _uniform_ce(logits[len(labels) :])
        if synthesise:
            virtual = self.feature_negatives.rescaled(  # type: ignore[union-attr]
                features[: len(labels)], labels, generator
            )
            self.last_feature_negatives = len(virtual)
            virtual_logits = self.network.classifier(virtual.to(features.dtype)).float()
            loss = loss + self.oe_weight * _uniform_ce(virtual_logits)
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
        negatives = (
            augment(batch.negatives.to(device), generator, self.augmentation) if outliers else x[:0]
        )
        _check_global_batch(len(x))
        lo, hi = distributed.shard_bounds(len(x))
        m_lo, m_hi = distributed.shard_bounds(len(negatives))
        inputs = torch.cat([x[lo:hi], negatives[m_lo:m_hi]])
        logits = self.ddp(inputs).float()
        k, world = hi - lo, distributed.world_size()
        loss = F.cross_entropy(logits[:k], labels[lo:hi], reduction="sum") * world / len(x)
        if outliers:
            oe = _uniform_ce(logits[k:], reduction="sum") * world / len(negatives)
            loss = loss + self.oe_weight * oe
        return loss, len(inputs)


def _uniform_ce(logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Outlier exposure (Hendrycks et al. 2019): cross-entropy to the uniform distribution."""
    per_row = -(logits.log_softmax(dim=1)).mean(dim=1)
    return per_row.sum() if reduction == "sum" else per_row.mean()
