"""Resizing uint8 image tensors (antialiased, square)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 N x C x H x W images to size x size; returns uint8."""
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out.round().clamp(0, 255).to(torch.uint8)


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey -> RGB by repetition, RGB -> grey by the mean, so any source meets any encoder."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1:
        return images.expand(-1, channels, -1, -1).contiguous()
    if channels == 1:
        return images.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
    raise ValueError(f"cannot convert {have}-channel images to {channels} channels")
