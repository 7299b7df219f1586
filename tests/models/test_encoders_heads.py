import pytest
import torch

from eibacl.config import ConfigError, ModelConfig
from eibacl.models.encoders import build_encoder
from eibacl.models.heads import ClassifierNetwork, ProjectionHead, SupConNetwork


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32, 64])
def test_resnet_small_feature_dim_is_four_times_width(channels, size):
    encoder = build_encoder("resnet-small", channels, 8, size).eval()
    assert encoder.feature_dim == 32
    with torch.no_grad():
        out = encoder(torch.rand(2, channels, size, size))
    assert out.shape == (2, 32)
    assert torch.isfinite(out).all()


def test_resnet_small_width_changes_the_output_dim():
    encoder = build_encoder("resnet-small", 1, 4, 32).eval()
    with torch.no_grad():
        assert encoder(torch.rand(3, 1, 32, 32)).shape == (3, 16)


def test_resnet18_accepts_one_channel():
    encoder = build_encoder("resnet18", 1, 32, 32).eval()
    assert encoder.feature_dim == 512
    with torch.no_grad():
        out = encoder(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 512)


@pytest.mark.parametrize(
    ("name", "close"),
    [("convnext_tiney", "convnext_tiny"), ("resnet-smal", "resnet-small"), ("vitb16", "vit_b_16")],
)
def test_unknown_encoder_lists_close_matches_in_one_line(name, close):
    for error, build in (
        (ValueError, lambda: build_encoder(name, 3, 32, 32)),
        (ConfigError, lambda: ModelConfig(encoder=name).validate()),
    ):
        with pytest.raises(error) as info:
            build()
        message = str(info.value)
        assert f"encoder={name!r} is unknown" in message and close in message
        assert "\n" not in message


# Feature sizes of torchvision's architectures (the input of their last classifier layer).
FEATURE_DIMS = [
    ("vit_b_16", 3, 32, 768),
    ("convnext_tiny", 1, 32, 768),
    ("swin_t", 3, 32, 768),
    ("googlenet", 3, 32, 1024),
    ("inception_v3", 1, 80, 2048),
    ("vgg11", 3, 32, 4096),
    ("squeezenet1_1", 1, 32, 512),
    ("efficientnet_b0", 1, 32, 1280),
]


@pytest.mark.parametrize(("name", "channels", "size", "dim"), FEATURE_DIMS)
def test_torchvision_backbones_give_the_layer_before_the_classifier(name, channels, size, dim):
    """Built on the meta device (shapes only: no weights are drawn, so even a ViT-B costs
    little); grey input rebuilds the first convolution."""
    with torch.device("meta"):
        encoder = build_encoder(name, channels, 8, size)
        out = encoder.eval()(torch.rand(2, channels, size, size))
    assert encoder.feature_dim == dim
    assert out.shape == (2, dim)
    first = next(m for m in encoder.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == channels


def test_mobilenet_feature_is_its_classifier_without_the_last_layer():
    """Against torchvision's own model with the same weights, computed layer by layer."""
    import torchvision

    torch.manual_seed(5)
    reference = torchvision.models.mobilenet_v3_small().eval()
    torch.manual_seed(5)
    encoder = build_encoder("mobilenet_v3_small", 3, 8, 32).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        pooled = reference.avgpool(reference.features(x)).flatten(1)
        expected = reference.classifier[2](reference.classifier[1](reference.classifier[0](pooled)))
        got = encoder.backbone(x)
    assert encoder.feature_dim == 1024
    assert torch.equal(got, expected)


@pytest.mark.parametrize(("name", "size"), [("squeezenet1_1", 8), ("vit_b_16", 8)])
def test_too_small_images_are_one_clear_line(name, size):
    with torch.device("meta"), pytest.raises(ValueError) as info:
        build_encoder(name, 3, 8, size)
    assert f"encoder={name!r} cannot take image_size={size}" in str(info.value)


def test_encoder_normalises_its_input():
    # Mean 0.5 / std 0.5: an input of 0.5 everywhere reaches the backbone as zeros.
    encoder = build_encoder("resnet-small", 1, 4, 28).eval()
    seen = {}
    encoder.backbone.register_forward_pre_hook(lambda _m, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        encoder(torch.full((1, 1, 28, 28), 0.5))
    assert torch.equal(seen["x"], torch.zeros(1, 1, 28, 28))


def test_supcon_network_rows_have_unit_norm():
    torch.manual_seed(0)
    network = SupConNetwork(build_encoder("resnet-small", 3, 4, 32), projection_dim=7).eval()
    with torch.no_grad():
        out = network(torch.rand(5, 3, 32, 32))
    assert out.shape == (5, 7)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))


def test_projection_head_normalises_and_classifier_has_class_logits():
    head = ProjectionHead(6, 3)
    out = head(torch.randn(4, 6) * 50)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    classifier = ClassifierNetwork(build_encoder("resnet-small", 1, 4, 28), 7).eval()
    with torch.no_grad():
        assert classifier(torch.rand(2, 1, 28, 28)).shape == (2, 7)
