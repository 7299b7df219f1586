"""Encoders: a small-image ResNet (28-64 px) and any torchvision classification backbone.

Every encoder takes float images in [0, 1] (N x C x H x W) and normalises them
itself, so a logged model needs no preprocessing code beside it. A torchvision backbone is
named as torchvision names it (`resnet50`, `convnext_tiny`, `vit_b_16`, ...: the names of
`torchvision.models.list_models(module=torchvision.models)`) and built with
`torchvision.models.get_model`; its feature is the layer before the classifier (the
classifier's last Linear becomes Identity). With `pretrained="imagenet"` it starts from
torchvision's default ImageNet weights (its weights API and cache,
TORCH_HOME/hub/checkpoints) and normalises with the mean and std those weights were
trained with. Grey input: the first convolution takes one channel (with pretrained weights,
its RGB filters summed).
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

SMALL = "resnet-small"
PRETRAINED = ("none", "imagenet")
IMAGENET_CLASSES = 1000
# Builders that warn or add auxiliary outputs unless told: no auxiliary classifiers (their
# tuple output in training mode is not a feature), explicit initialisation.
BUILDER_KWARGS = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


@functools.cache
def torchvision_backbones() -> tuple[str, ...]:
    """The classification models torchvision builds by name."""
    return tuple(torchvision.models.list_models(module=torchvision.models))


def encoder_names() -> tuple[str, ...]:
    return (SMALL, *torchvision_backbones())


def check_encoder(name: str) -> None:
    """Raise one line naming the close matches when `name` is no encoder."""
    if name == SMALL or name in torchvision_backbones():
        return
    close = difflib.get_close_matches(name, encoder_names(), n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(
        f"encoder={name!r} is unknown: {hint}use {SMALL} or a torchvision classification "
        "model (torchvision.models.list_models(module=torchvision.models), e.g. resnet50, "
        "convnext_tiny, vit_b_16)"
    )


def imagenet_weights(name: str) -> torchvision.models.WeightsEnum:
    """torchvision's default ImageNet weights of `name` (e.g. ResNet18_Weights.IMAGENET1K_V1)."""
    check_encoder(name)
    if name == SMALL:
        raise ValueError(
            f"pretrained=imagenet: encoder={name!r} has no pretrained weights; use a torchvision "
            "backbone (e.g. encoder=resnet18) or pretrained=none"
        )
    return torchvision.models.get_model_weights(name).DEFAULT


def weights_file(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torchvision looks for (and caches) the file of `weights`."""
    filename = Path(urlparse(weights.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _build_torchvision(name: str, pretrained: str, image_size: int) -> nn.Module:
    kwargs = dict(BUILDER_KWARGS.get(name, {}))
    if pretrained != "imagenet":
        if name.startswith("vit_"):  # a ViT's position embeddings are made for one size
            kwargs["image_size"] = image_size
        return torchvision.models.get_model(name, weights=None, **kwargs)
    weights = imagenet_weights(name)
    kwargs.pop("init_weights", None)
    try:
        return torchvision.models.get_model(name, weights=weights, **kwargs)
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


def _torchvision_backbone(
    name: str, in_channels: int, pretrained: str, image_size: int
) -> tuple[nn.Module, int]:
    """The backbone without its classifier, and its feature dimension."""
    try:
        net = _build_torchvision(name, pretrained, image_size)
    except AssertionError as exc:  # e.g. a ViT's image size not a multiple of its patch
        raise _size_error(name, image_size, exc) from exc
    if in_channels != 3:
        _adapt_first_conv(net, in_channels, summed=pretrained == "imagenet")
    feature_dim = _drop_classifier(net, name)
    _check_input_size(net, name, in_channels, image_size)
    return net, feature_dim


def _adapt_first_conv(net: nn.Module, in_channels: int, summed: bool) -> None:
    """The first (RGB) convolution rebuilt for `in_channels`; with `summed`, for grey input,
    its filters summed over the RGB channels (the same response to a grey image)."""
    path, old = next((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        old.dilation,
        old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    if summed and in_channels == 1:
        with torch.no_grad():
            new.weight.copy_(old.weight.sum(dim=1, keepdim=True))
            if old.bias is not None:
                new.bias.copy_(old.bias)
    net.set_submodule(path, new)


def _drop_classifier(net: nn.Module, name: str) -> int:
    """Replace the classifier's last Linear (ImageNet's 1000 outputs) with Identity and return
    its input size; SqueezeNet's convolutional classifier becomes a global average pool."""
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if linears and linears[-1][1].out_features == IMAGENET_CLASSES:
        path, head = linears[-1]
        net.set_submodule(path, nn.Identity())
        return head.in_features
    classifier = getattr(net, "classifier", None)
    convs = [m for m in getattr(classifier, "modules", lambda: [])() if isinstance(m, nn.Conv2d)]
    if convs and convs[-1].out_channels == IMAGENET_CLASSES:  # squeezenet
        net.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        return convs[-1].in_channels
    raise ValueError(f"encoder={name!r}: its classifier head was not found; use another encoder")


def _check_input_size(net: nn.Module, name: str, in_channels: int, image_size: int) -> None:
    """One forward pass of a blank image: a backbone that cannot take `image_size` says so
    now, in one line, rather than at the first batch."""
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, in_channels, image_size, image_size))
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise _size_error(name, image_size, exc) from exc
    finally:
        net.train(was_training)


def _size_error(name: str, image_size: int, exc: BaseException) -> ValueError:
    return ValueError(
        f"encoder={name!r} cannot take image_size={image_size} ({exc}); use a larger "
        "image_size (pretrained ViTs and Swins need their own: 224, 256 for swin_v2) or "
        "another encoder"
    )


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
        check_encoder(name)
        if name == SMALL:
            if pretrained != "none":
                imagenet_weights(name)  # raises: resnet-small has no pretrained weights
            self.backbone: nn.Module = SmallResNet(in_channels, width)
            self.feature_dim = self.backbone.feature_dim
        else:
            self.backbone, self.feature_dim = _torchvision_backbone(
                name, in_channels, pretrained, image_size
            )
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
