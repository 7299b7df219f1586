"""pretrained=imagenet, offline: a state dict placed where torchvision looks for its
weights file (TORCH_HOME/hub/checkpoints/<file name of the weights' url>) is loaded."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from eibacl.config import ConfigError, ModelConfig
from eibacl.models.encoders import build_encoder, weights_file
from tests import tiny

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture
def cached_resnet18(tmp_path, monkeypatch):
    """A random resnet18 state dict in a fresh TORCH_HOME, under torchvision's file name."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    path = weights_file(weights)
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.manual_seed(123)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, path)
    return state


def test_imagenet_weights_and_normalisation_are_used(cached_resnet18):
    encoder = build_encoder("resnet18", 3, 32, 64, pretrained="imagenet")
    got = encoder.backbone.state_dict()
    for key in ("conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"):
        assert torch.equal(got[key], cached_resnet18[key])
    assert encoder.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
    assert encoder.std.flatten().tolist() == pytest.approx(IMAGENET_STD)
    # A mid-grey image is normalised with ImageNet's statistics before the backbone.
    x = torch.full((1, 3, 64, 64), 0.5)
    expected = (0.5 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    seen = {}

    def keep_input(module, inputs, output):
        seen["in"] = inputs[0]

    encoder.backbone.conv1.register_forward_hook(keep_input)
    encoder.eval()(x)
    assert torch.allclose(seen["in"][0, :, 0, 0], expected)


def test_grey_input_sums_the_rgb_filters(cached_resnet18):
    encoder = build_encoder("resnet18", 1, 32, 32, pretrained="imagenet")
    expected = cached_resnet18["conv1.weight"].sum(dim=1, keepdim=True)
    assert torch.allclose(encoder.backbone.conv1.weight, expected)
    assert encoder.mean.item() == pytest.approx(sum(IMAGENET_MEAN) / 3)


def test_any_torchvision_backbone_loads_its_cached_weights_grey(tmp_path, monkeypatch):
    """mobilenet_v3_small (not a ResNet): the cached state dict is loaded, its first
    convolution summed over RGB for grey input, ImageNet's statistics averaged."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = weights_file(torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1)
    path.parent.mkdir(parents=True)
    torch.manual_seed(7)
    state = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    torch.save(state, path)
    encoder = build_encoder("mobilenet_v3_small", 1, 8, 32, pretrained="imagenet")
    got = encoder.backbone.state_dict()
    expected_first = state["features.0.0.weight"].sum(dim=1, keepdim=True)
    assert torch.equal(got["features.0.0.weight"], expected_first)
    assert torch.equal(got["classifier.0.weight"], state["classifier.0.weight"])
    assert "classifier.3.weight" not in got  # the ImageNet layer is gone
    assert encoder.feature_dim == 1024
    assert encoder.mean.item() == pytest.approx(sum(IMAGENET_MEAN) / 3)


def test_random_init_keeps_the_half_normalisation():
    encoder = build_encoder("resnet18", 3, 32, 32)
    assert encoder.mean.flatten().tolist() == [0.5] * 3


@pytest.mark.parametrize(
    ("name", "filename"),
    [
        ("resnet34", "resnet34-b627a593.pth"),
        ("mobilenet_v3_small", "mobilenet_v3_small-047dcff4.pth"),
    ],
)
def test_missing_weights_offline_say_where_torchvision_looks(name, filename, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError) as info:
        build_encoder(name, 3, 32, 32, pretrained="imagenet")
    message = str(info.value)
    where = tmp_path / "empty" / "hub" / "checkpoints" / filename
    assert str(where) in message and "TORCH_HOME" in message and "pretrained=none" in message


def test_encoder_without_pretrained_weights_is_one_clear_line():
    with pytest.raises(ConfigError, match="pretrained=.*resnet-small.*has no pretrained weights"):
        ModelConfig(encoder="resnet-small", pretrained="imagenet").validate()
    with pytest.raises(ConfigError, match="pretrained='yes'.*none or imagenet"):
        ModelConfig(encoder="resnet18", pretrained="yes").validate()
    with pytest.raises(ValueError, match="has no pretrained weights"):
        build_encoder("resnet-small", 3, 8, 32, pretrained="imagenet")


def test_pretrain_and_baseline_start_from_the_cached_weights(
    cached_resnet18, fresh_experiment, monkeypatch
):
    from eibacl import tracking
    from eibacl.models import encoders
    from eibacl.train.baseline import baseline
    from eibacl.train.pretrain import pretrain

    monkeypatch.setattr(tracking, "log_encoder", lambda encoder, name="encoder": "skipped")
    built = []
    original = encoders.Encoder.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        built.append(self.backbone.conv1.weight.detach().clone())

    monkeypatch.setattr(encoders.Encoder, "__init__", recording)
    grey_filters = cached_resnet18["conv1.weight"].sum(dim=1, keepdim=True)
    small = dict(encoder="resnet18", pretrained="imagenet", epochs=1, register=False)
    result = pretrain(tiny.pretrain_config(**{k: small[k] for k in list(small)[:3]}))
    assert torch.allclose(built[-1], grey_filters)  # Fashion-MNIST is grey
    assert result.encoder.mean.item() == pytest.approx(sum(IMAGENET_MEAN) / 3)
    baseline(tiny.baseline_config(**small))
    assert torch.allclose(built[-1], grey_filters)
