import pytest
import torch

from eibacl.models.encoders import ENCODERS, build_encoder
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


def test_unknown_encoder_names_the_choices():
    with pytest.raises(ValueError) as info:
        build_encoder("vgg11", 3, 32, 32)
    message = str(info.value)
    assert "vgg11" in message
    for name in ENCODERS:
        assert name in message


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
