import pytest
import torch

from eibacl.data.transforms import AugmentSettings, augment

IDENTITY = AugmentSettings(
    scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0, brightness=0.0, contrast=0.0, saturation=0.0
)


def _images(channels=3, n=6, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("channels", [1, 3])
def test_output_is_float_in_unit_range_with_same_shape(channels):
    images = _images(channels)
    out = augment(images, _gen(0))
    assert out.dtype == torch.float32
    assert out.shape == images.shape
    assert out.min() >= 0 and out.max() <= 1


def test_same_seed_same_views_other_seed_other_views():
    images = _images()
    a = augment(images, _gen(7))
    b = augment(images, _gen(7))
    c = augment(images, _gen(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # Consecutive calls on one generator give fresh views (two SupCon views differ).
    g = _gen(7)
    assert not torch.allclose(augment(images, g), augment(images, g))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [7, 16, 28])
def test_identity_settings_return_the_input(channels, size):
    images = _images(channels, size=size)
    out = augment(images, _gen(1), IDENTITY)
    torch.testing.assert_close(out, images.float() / 255, rtol=0, atol=1e-5)


def test_float_input_is_accepted_and_not_modified():
    x = _images().float() / 255
    before = x.clone()
    out = augment(x, _gen(2), IDENTITY)
    torch.testing.assert_close(out, before, rtol=0, atol=1e-5)
    assert torch.equal(x, before)


def test_flip_with_identity_crop_mirrors_exactly():
    images = _images(size=9)
    settings = AugmentSettings(
        scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=1.0, brightness=0, contrast=0, saturation=0
    )
    out = augment(images, _gen(3), settings)
    torch.testing.assert_close(out, images.float().flip(-1) / 255, rtol=0, atol=1e-5)


def test_quarter_area_crop_samples_inside_the_image():
    # A horizontal ramp: a crop of half the width shows a ramp of half the range, upsampled.
    size = 32
    ramp = torch.linspace(0, 1, size).expand(4, 1, size, size).contiguous()
    settings = AugmentSettings(
        scale=(0.25, 0.25), ratio=(1.0, 1.0), flip=0, brightness=0, contrast=0, saturation=0
    )
    out = augment(ramp, _gen(4), settings)
    span = out[:, 0, :, -1] - out[:, 0, :, 0]
    torch.testing.assert_close(span, torch.full_like(span, 0.5), rtol=0, atol=0.04)
    # Rows are unchanged by a horizontal ramp crop: every row equals the first.
    torch.testing.assert_close(out, out[:, :, :1].expand_as(out))


def test_random_crops_never_blend_in_padding():
    # A constant image stays constant under any crop (no black fringe at the crop edges).
    x = torch.full((2000, 1, 16, 16), 0.6)
    settings = AugmentSettings(scale=(0.2, 0.6), brightness=0, contrast=0, saturation=0)
    out = augment(x, _gen(5), settings)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)


def test_colour_jitter_changes_pixels_but_not_geometry():
    images = _images()
    settings = AugmentSettings(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0)
    out = augment(images, _gen(6), settings)
    assert not torch.allclose(out, images.float() / 255, atol=1e-3)
    # On grey images brightness and contrast are an increasing affine map then a clamp: the
    # order of pixel values is kept (non-decreasing), so no pixel moves.
    grey = _images(1, n=4)
    grey_out = augment(grey, _gen(6), settings).flatten(1)
    order = grey.flatten(1).argsort(dim=1, stable=True)
    ranked = grey_out.gather(1, order)
    assert (ranked[:, 1:] >= ranked[:, :-1] - 1e-6).all()
    assert not torch.allclose(grey_out, grey.flatten(1).float() / 255, atol=1e-3)
