"""Frozen-encoder feature extraction from uint8 image tensors."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from eibacl.device import autocast


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def extract_features(
    encoder: nn.Module,
    images_uint8: torch.Tensor,
    *,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    normalize_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run `encoder` in eval mode on N x C x H x W uint8 images; float32 CPU features.

    Pixels become floats in [0, 1], then `normalize_fn` (default: none, since eibacl's
    encoders normalise their input themselves).
    The uint8 batch is moved before conversion (4x less to copy to a GPU); on
    CUDA the forward pass runs under bf16 autocast. The encoder's train/eval
    mode is restored afterwards.
    """
    if images_uint8.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (N, C, H, W), got dtype {images_uint8.dtype}")
    if images_uint8.ndim != 4:
        raise ValueError(
            f"images must be a 4-D (N, C, H, W) tensor, got shape {tuple(images_uint8.shape)}"
        )
    if images_uint8.shape[0] == 0:
        raise ValueError("no images to extract features from (the set is empty)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device)
    norm = normalize_fn or _identity
    mixed = autocast(dev)
    was_training = encoder.training
    encoder.eval()
    outputs: list[torch.Tensor] = []
    try:
        with torch.inference_mode(), mixed:
            for start in range(0, images_uint8.shape[0], batch_size):
                batch = images_uint8[start : start + batch_size].to(dev, non_blocking=True)
                x = norm(batch.float().div_(255.0))
                feats = encoder(x)
                outputs.append(feats.float().reshape(feats.shape[0], -1).cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(outputs)
