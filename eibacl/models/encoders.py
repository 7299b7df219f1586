"""Encoders: a small-image ResNet (28-64 px) and torchvision's ResNets (larger inputs).

Every encoder takes float images in [0, 1] (N x C x H x W) and normalises them
itself, so a logged model needs no preprocessing code beside it. With
`pretrained="imagenet"` a torchvision ResNet starts from torchvision's own ImageNet
weights (its weights API and cache, TORCH_HOME/hub/checkpoints) and normalises with the
ImageNet mean and std those weights were trained with.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50")
ENCODERS = ("resnet-small", *TORCHVISION_RESNETS)
PRETRAINED = ("none", "imagenet")


def imagenet_weights(name: str) -> torchvision.models.WeightsEnum:
    """torchvision's default ImageNet weights of a ResNet (e.g. ResNet18_Weights.IMAGENET1K_V1)."""
    if name not in TORCHVISION_RESNETS:
        raise ValueError(
            f"pretrained=imagenet: encoder={name!r} has no pretrained weights; use encoder="
            f"{' | '.join(TORCHVISION_RESNETS)} or pretrained=none"
        )
    return torchvision.models.get_model_weights(name).DEFAULT


def weights_file(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torchvision looks for (and caches) the file of `weights`."""
    filename = Path(urlparse(weights.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _load_pretrained(name: str) -> tuple[nn.Module, torchvision.models.WeightsEnum]:
    weights = imagenet_weights(name)
    try:
        return getattr(torchvision.models, name)(weights=weights), weights
    except (OSError, RuntimeError) as exc:  # URLError is an OSError: offline, no cached file
        where = weights_file(weights)
        raise FileNotFoundError(
            f"pretrained=imagenet: the {weights} weights of {name} are not in torchvision's "
            f"cache ({where}) and could not be downloaded ({exc}); copy {where.name} there "
            f"(from {weights.url}), point TORCH_HOME at a cache that has it, or use "
            "pretrained=none"
        ) from exc


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """ResNet with a 3x3 stride-2 stem and three stages of widths w, 2w, 4w (2 blocks each).

    At w=32 it has ~0.7M parameters and trains at ~1000 img/s at 32 px on 2 CPU cores.
    """

    def __init__(self, in_channels: int, width: int = 32, blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        layers, channels = [], width
        for stage, out_channels in enumerate((width, 2 * width, 4 * width)):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)


def _torchvision_resnet(name: str, in_channels: int, pretrained: str) -> tuple[nn.Module, int]:
    if pretrained == "imagenet":
        net, _ = _load_pretrained(name)
    else:
        net = getattr(torchvision.models, name)(weights=None)
    if in_channels != 3:
        old = net.conv1.weight.data
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        if pretrained == "imagenet" and in_channels == 1:  # grey: the RGB filters summed
            net.conv1.weight.data.copy_(old.sum(dim=1, keepdim=True))
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feature_dim


def _normalisation(name: str, in_channels: int, pretrained: str) -> tuple[list, list]:
    """(mean, std) per channel: ImageNet's for pretrained weights (averaged for grey
    input), else 0.5 / 0.5."""
    if pretrained != "imagenet":
        return [0.5] * in_channels, [0.5] * in_channels
    transform = imagenet_weights(name).transforms()
    mean, std = list(transform.mean), list(transform.std)
    if in_channels != 3:
        mean, std = [sum(mean) / 3] * in_channels, [sum(std) / 3] * in_channels
    return mean, std


class Encoder(nn.Module):
    """Backbone plus input normalisation; output = the features a linear probe reads."""

    def __init__(
        self,
        name: str,
        in_channels: int,
        width: int = 32,
        image_size: int = 32,
        pretrained: str = "none",
    ) -> None:
        super().__init__()
        if pretrained not in PRETRAINED:
            raise ValueError(f"pretrained={pretrained!r} is unknown; use none or imagenet")
        if name == "resnet-small":
            if pretrained != "none":
                imagenet_weights(name)  # raises: resnet-small has no pretrained weights
            self.backbone: nn.Module = SmallResNet(in_channels, width)
            self.feature_dim = self.backbone.feature_dim
        elif name in TORCHVISION_RESNETS:
            self.backbone, self.feature_dim = _torchvision_resnet(name, in_channels, pretrained)
        else:
            raise ValueError(f"encoder={name!r} is unknown; choose one of {', '.join(ENCODERS)}")
        self.name = name
        self.in_channels = in_channels
        self.image_size = image_size
        mean, std = _normalisation(name, in_channels, pretrained)
        self.register_buffer("mean", torch.tensor(mean).view(1, in_channels, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, in_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)


def build_encoder(
    name: str, in_channels: int, width: int, image_size: int, pretrained: str = "none"
) -> Encoder:
    return Encoder(name, in_channels, width, image_size, pretrained)
