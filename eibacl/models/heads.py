"""Projection head and the encoder+head networks trained by each method."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eibacl.models.encoders import Encoder


class ProjectionHead(nn.Module):
    """MLP to an L2-normalised embedding (Khosla et al.: hidden width = feature width)."""

    def __init__(self, in_dim: int, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(features), dim=1)


class SupConNetwork(nn.Module):
    def __init__(self, encoder: Encoder, projection_dim: int = 128) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.feature_dim, projection_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class ClassifierNetwork(nn.Module):
    """The cross-entropy baseline: the same encoder with a linear classifier."""

    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(encoder.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))
