"""Feature-space negatives: outlier embeddings synthesised from the class boundaries.

The control for near-OOD images (synthetic component `features`): no image is made.
Every step, from the embeddings of the current batch's real images, each class's
*boundary* is taken (the embeddings at or past the `quantile` of cosine distance to the
class's mean direction), boundary points are drawn at random, Gaussian noise of std
`noise` is added per coordinate and the result is put back on the unit sphere. This is
NPOS (Tao et al., ICLR 2023: Gaussian samples around boundary ID embeddings) with the
distance to the class mean in place of the k-NN distance, cheap and stable at ~20
embeddings per class and batch; VOS (Du et al., ICLR 2022) likewise samples outliers
from the low-density rim of each class in feature space.

Scale: the noise has norm about `noise * sqrt(D)` (1.13 for 0.1 in 128 dimensions), so
an outlier keeps a cosine of about 0.66 with its seed: it lies in a shell around the
boundary, mostly outside every class cluster.

The synthesised embeddings are detached (as VOS samples are): they are constants that
shape the denominators, and the encoder is not trained to move them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from eibacl.config import synthetic_components


def boundary_mask(embeddings: torch.Tensor, labels: torch.Tensor, quantile: float) -> torch.Tensor:
    """N bool: the embeddings at or past `quantile` of their class's distances to its mean.

    Distance = 1 - cosine to the normalised class mean (of the normalised embeddings).
    Quantiles interpolate linearly (numpy's default); quantile 0 marks every embedding.
    """
    z = F.normalize(embeddings.detach().float(), dim=1)
    mask = torch.zeros(len(z), dtype=torch.bool, device=z.device)
    for label in labels.unique():
        members = labels == label
        center = F.normalize(z[members].mean(dim=0), dim=0)
        distance = 1.0 - z[members] @ center
        threshold = torch.quantile(distance, quantile)
        mask[members] = distance >= threshold
    return mask


def synthesize(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    count: int,
    noise: float,
    quantile: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` unit-norm outlier embeddings seeded at class-boundary points, and the seeds' rows.

    `embeddings` N x D (any norm), `labels` N. Draws from the CPU `generator` only when
    `count` > 0, so a run with no feature negatives sees the same random stream as one
    without the component. Returns (count x D detached float tensor, count seed indices).
    """
    z = F.normalize(embeddings.detach().float(), dim=1)
    if count <= 0 or len(z) == 0:
        return z[:0], torch.empty(0, dtype=torch.long)
    boundary = boundary_mask(z, labels, quantile).nonzero().flatten().cpu()
    pick = boundary[torch.randint(len(boundary), (count,), generator=generator)]
    eps = torch.randn(count, z.shape[1], generator=generator).to(z.device)
    return F.normalize(z[pick.to(z.device)] + noise * eps, dim=1), pick


@dataclass(frozen=True)
class FeatureNegatives:
    """Per-batch settings of feature-space negatives (see the module docstring)."""

    per_batch: int
    noise: float
    quantile: float

    def __call__(
        self, embeddings: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Unit-norm outliers (per_batch x D) around the boundary of `embeddings`' classes."""
        out, _ = synthesize(
            embeddings, labels, self.per_batch, self.noise, self.quantile, generator
        )
        return out

    def rescaled(
        self, features: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Outliers in an unnormalised feature space (the CE baseline's penultimate layer):
        made on the unit sphere as above, then given the norm of the point they were seeded at."""
        out, seeds = synthesize(
            features, labels, self.per_batch, self.noise, self.quantile, generator
        )
        norms = features.detach().float().norm(dim=1)[seeds.to(features.device)]
        return out * norms[:, None]


def from_config(config: object) -> FeatureNegatives | None:
    """The feature negatives a training config asks for, or None without `features`."""
    if "features" not in synthetic_components(getattr(config, "synthetic", "none")):
        return None
    return FeatureNegatives(
        per_batch=int(config.feature_negatives_per_batch),  # type: ignore[attr-defined]
        noise=float(config.feature_noise),  # type: ignore[attr-defined]
        quantile=float(config.feature_boundary_quantile),  # type: ignore[attr-defined]
    )
