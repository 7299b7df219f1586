"""Supervised contrastive loss, the L_out form of Khosla et al. (NeurIPS 2020).

For an anchor i with positives P(i) (same label, every other sample and view) and
contrast set A(i) (every other sample and view, plus the contrast-only samples):

    L_i = -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p/T) / sum_{a in A(i)} exp(z_i.z_a/T) )

Contrast-only samples (near-OOD hard negatives) enter every denominator but are never
anchors and never positives. Anchors without positives are left out of the mean (and
give no NaN). The loss is the mean of L_i over the remaining anchors; unlike the
reference code there is no extra T/base_T factor (it only rescales the gradient).
"""

from __future__ import annotations

import torch


def supcon_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    contrast_only: torch.Tensor | None = None,
) -> torch.Tensor:
    """SupCon L_out.

    features: N x V x D L2-normalised projections (V views of N samples).
    labels: N integer labels.
    contrast_only: M x D L2-normalised projections that are negatives only (or None).
    """
    if features.dim() != 3:
        raise ValueError("features must be N x V x D (samples x views x dim)")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n, views, _ = features.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    dtype = torch.promote_types(features.dtype, torch.float32)  # bf16/fp16 -> fp32, fp64 kept
    anchors = torch.cat(features.unbind(dim=1), dim=0).to(dtype)  # view-major: (V*N) x D
    anchor_labels = labels.repeat(views)
    logits = anchors @ anchors.T / temperature
    self_mask = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    positives = (anchor_labels[:, None] == anchor_labels[None, :]) & ~self_mask
    contrast = logits.masked_fill(self_mask, float("-inf"))
    if contrast_only is not None and contrast_only.numel() > 0:
        negatives = anchors @ contrast_only.to(dtype).T / temperature
        contrast = torch.cat([contrast, negatives], dim=1)
    log_denominator = torch.logsumexp(contrast, dim=1, keepdim=True)
    log_prob = (logits - log_denominator).masked_fill(~positives, 0.0)
    n_positives = positives.sum(dim=1)
    has_positive = n_positives > 0
    if not has_positive.any():
        return anchors.sum() * 0.0  # keeps the graph, no NaN
    mean_log_prob = log_prob.sum(dim=1)[has_positive] / n_positives[has_positive]
    return -mean_log_prob.mean()
