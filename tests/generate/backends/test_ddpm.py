"""The embedded class-conditional DDPM backend, at tiny sizes."""

from __future__ import annotations

import math

import pytest
import torch

from eibacl.generate.backends.ddpm import DDPMBackend
from eibacl.generate.backends.protocol import GeneratorBackend, parse_strengths, validate_strength

TINY = dict(
    block_out_channels=(8, 16),
    layers_per_block=1,
    norm_num_groups=4,
    attention=False,
    batch_size=16,
    inference_steps=10,
    lr=3e-3,
    warmup_steps=5,
)


def _toy_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: dark images (~30), class 1: bright images (~220); 16×16 grey."""
    gen = torch.Generator().manual_seed(0)
    jitter = torch.randint(-10, 10, (32, 1, 16, 16), generator=gen)
    base = torch.tensor([30] * 16 + [220] * 16).view(-1, 1, 1, 1)
    return (base + jitter).to(torch.uint8), torch.tensor([0] * 16 + [1] * 16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(one_torch_thread) -> DDPMBackend:
    images, labels = _toy_data()
    backend = DDPMBackend(16, 1, 2, train_steps=60, **TINY)
    backend.fit(images, labels, ["dark", "bright"], progress=False)
    return backend


def test_is_a_generator_backend(trained):
    assert isinstance(trained, GeneratorBackend)
    assert trained.name == "ddpm"


def test_fit_loss_is_finite_and_decreases(trained):
    losses = trained.loss_history
    assert len(losses) == 60 and trained.trained_steps == 60
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10


def test_fit_stops_at_the_time_budget():
    images, labels = _toy_data()
    backend = DDPMBackend(16, 1, 2, train_steps=1000, max_minutes=1e-6, **TINY)
    backend.fit(images, labels, ["dark", "bright"], progress=False)
    assert 0 < backend.trained_steps < 1000


def test_sampling_weights_are_the_documented_ema(monkeypatch):
    """After k updates the average moves by (1 - d_k), d_k = min(ema_decay, k / (9 + k)),
    starting from the first trained weights: recomputed here from every step's weights."""
    images, labels = _toy_data()
    backend = DDPMBackend(16, 1, 2, train_steps=5, ema_decay=0.5, **TINY)
    params = list(backend.model.parameters())
    snapshots = []
    real_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        snapshots.append([p.detach().clone() for p in params])
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    backend.fit(images, labels, ["dark", "bright"], progress=False)
    assert len(snapshots) == 5
    expected = snapshots[0]
    for k, weights in enumerate(snapshots[1:], start=2):
        d = min(0.5, k / (9 + k))
        expected = [d * e + (1 - d) * w for e, w in zip(expected, weights, strict=True)]
    for got, want in zip(params, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_img2img_shape_dtype_and_per_seed_determinism(trained):
    images, _ = _toy_data()
    batch = images[[0, 20, 5]]
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    out = trained.img2img(batch, weights, 0.6, guidance_scale=2.0, seeds=[11, 12, 13])
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    # The middle image alone, and in another batch composition, gives the same output.
    alone = trained.img2img(batch[1:2], weights[1:2], 0.6, guidance_scale=2.0, seeds=[12])
    assert torch.equal(alone[0], out[1])
    other = trained.img2img(
        torch.cat([images[[30]], batch[1:2]]),
        torch.tensor([[0.0, 1.0], [0.0, 1.0]]),
        0.6,
        guidance_scale=2.0,
        seeds=[99, 12],
    )
    assert torch.equal(other[1], out[1])
    again = trained.img2img(batch, weights, 0.6, guidance_scale=2.0, seeds=[11, 12, 13])
    assert torch.equal(again, out)
    different = trained.img2img(batch, weights, 0.6, guidance_scale=2.0, seeds=[11, 7, 13])
    assert not torch.equal(different[1], out[1])


def test_small_strength_stays_close_to_the_input(trained):
    images, labels = _toy_data()
    weights = torch.nn.functional.one_hot(labels, 2).float()
    seeds = list(range(len(labels)))
    low = trained.img2img(images, weights, 0.1, guidance_scale=1.0, seeds=seeds)
    high = trained.img2img(images, weights, 1.0, guidance_scale=1.0, seeds=seeds)
    low_err = (low.float() - images.float()).abs().mean()
    high_err = (high.float() - images.float()).abs().mean()
    assert low_err < 12.0
    assert low_err < 0.5 * high_err


def test_class_conditioning_and_mix(trained):
    images, _ = _toy_data()
    src = images[[0, 1, 2, 3]]  # dark sources, fully re-noised at strength 1
    seeds = [1, 2, 3, 4]
    dark = trained.img2img(
        src, torch.tensor([[1.0, 0.0]] * 4), 1.0, guidance_scale=3.0, seeds=seeds
    )
    bright = trained.img2img(
        src, torch.tensor([[0.0, 1.0]] * 4), 1.0, guidance_scale=3.0, seeds=seeds
    )
    mix = trained.img2img(src, torch.tensor([[0.5, 0.5]] * 4), 1.0, guidance_scale=3.0, seeds=seeds)
    d, b, m = (x.float().mean().item() for x in (dark, bright, mix))
    assert b - d > 25, (d, b)  # a 60-step model: conditioning is learnt, not yet sharp
    assert d + 5 < m < b - 5, (d, m, b)  # the mixed embedding lands in between


def test_masks_keep_the_background(trained):
    images, _ = _toy_data()
    src = images[[0, 1]]
    masks = torch.zeros(2, 1, 16, 16)
    masks[:, :, :, 8:] = 1  # regenerate the right half only
    out = trained.img2img(
        src, torch.tensor([[0.0, 1.0]] * 2), 0.8, guidance_scale=2.0, seeds=[3, 4], masks=masks
    )
    assert torch.equal(out[..., :8], src[..., :8])
    assert not torch.equal(out[..., 8:], src[..., 8:])


def test_save_load_round_trip(trained, tmp_path):
    images, _ = _toy_data()
    trained.save(tmp_path / "gen")
    assert (tmp_path / "gen" / "config.json").is_file()
    assert (tmp_path / "gen" / "model.safetensors").is_file()
    loaded = DDPMBackend.load(tmp_path / "gen")
    assert loaded.fingerprint() == trained.fingerprint()
    assert loaded.config.class_names == ["dark", "bright"]
    weights = torch.tensor([[0.3, 0.7], [1.0, 0.0]])
    a = trained.img2img(images[[0, 17]], weights, 0.7, guidance_scale=2.5, seeds=[5, 6])
    b = loaded.img2img(images[[0, 17]], weights, 0.7, guidance_scale=2.5, seeds=[5, 6])
    assert torch.equal(a, b)
    # Sampling settings are part of the fingerprint.
    fewer = DDPMBackend.load(tmp_path / "gen", inference_steps=5)
    assert fewer.fingerprint() != trained.fingerprint()


def test_fingerprint_tracks_weights():
    a = DDPMBackend(16, 1, 2, **TINY)
    b = DDPMBackend(16, 1, 2, **TINY)
    c = DDPMBackend(16, 1, 2, seed=1, **TINY)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    with torch.no_grad():
        b.model.class_embedding.weight[0, 0] += 1.0
    assert a.fingerprint() != b.fingerprint()


def test_attention_variant_runs():
    backend = DDPMBackend(16, 3, 3, **{**TINY, "attention": True})
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    out = backend.img2img(
        images, torch.tensor([[1.0, 0, 0], [0, 0.5, 0.5]]), 0.5, guidance_scale=2.0, seeds=[0, 1]
    )
    assert out.shape == (2, 3, 16, 16)


def test_input_errors(trained):
    images, labels = _toy_data()
    one_hot = torch.tensor([[1.0, 0.0]])
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\], got 1.5"):
        trained.img2img(images[:1], one_hot, 1.5, guidance_scale=1.0, seeds=[0])
    with pytest.raises(ValueError, match="sum to 1"):
        trained.img2img(images[:1], torch.tensor([[0.5, 0.2]]), 0.5, guidance_scale=1.0, seeds=[0])
    with pytest.raises(ValueError, match="one seed per image"):
        trained.img2img(images[:1], one_hot, 0.5, guidance_scale=1.0, seeds=[0, 1])
    with pytest.raises(ValueError, match="image_size=8"):
        trained.img2img(
            torch.zeros(1, 1, 8, 8, dtype=torch.uint8), one_hot, 0.5, guidance_scale=1.0, seeds=[0]
        )
    with pytest.raises(ValueError, match="class names"):
        DDPMBackend(16, 1, 2, **TINY).fit(images, labels, ["only-one"], progress=False)


def test_validate_and_parse_strengths():
    assert validate_strength(1) == 1.0
    assert parse_strengths("0.25,0.5, 0.75,1.0") == [0.25, 0.5, 0.75, 1.0]
    assert parse_strengths(0.5) == [0.5]
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\], got 1.5"):
        validate_strength(1.5)
    for bad in ("0", "-0.1", "nan", "0.5,2"):
        with pytest.raises(ValueError):
            parse_strengths(bad)
    with pytest.raises(ValueError, match="no strength"):
        parse_strengths("")


def test_away_guides_away_from_the_source_class(trained):
    """`away`: eps = eps_source + s * (eps_null - eps_source). From dark sources, pushing away
    from 'dark' makes brighter images than plain dark conditioning (measured with this
    60-step model at strength 0.75: dark 71, null 72, away from dark 91 mean grey level)."""
    images, _ = _toy_data()
    src, seeds = images[[0, 1, 2, 3]], [1, 2, 3, 4]
    null_target = torch.tensor([[0.0, 0.0, 1.0]] * 4)
    away_from_dark = torch.tensor([[1.0, 0.0, 0.0]] * 4)
    kw = {"guidance_scale": 3.0, "seeds": seeds}
    dark = trained.img2img(src, torch.tensor([[1.0, 0.0]] * 4), 0.75, **kw)
    away = trained.img2img(src, null_target, 0.75, negative_weights=away_from_dark, **kw)
    assert away.float().mean() > dark.float().mean() + 8
    # the default negative is the null: naming it explicitly changes nothing
    plain = trained.img2img(src, torch.tensor([[1.0, 0.0]] * 4), 0.75, **kw)
    named = trained.img2img(
        src,
        torch.tensor([[1.0, 0.0]] * 4),
        0.75,
        negative_weights=torch.tensor([[0.0, 0.0, 1.0]] * 4),
        **kw,
    )
    assert torch.equal(plain, named)
    with pytest.raises(ValueError, match="negative_weights"):
        trained.img2img(
            src[:1],
            torch.tensor([[1.0, 0.0]]),
            0.75,
            negative_weights=torch.ones(1, 2) / 2,
            **{"guidance_scale": 3.0, "seeds": [0]},
        )


def test_extrapolated_embedding_lies_past_the_source_at_the_mean_norm(trained):
    table = trained.model.class_embedding.weight.detach()
    e0, e1 = table[0], table[1]
    with torch.no_grad():
        past = trained.model.embed(torch.tensor([[3.0, -2.0]]))[0]  # e0 + 2 * (e0 - e1)
        inside = trained.model.embed(torch.tensor([[0.5, 0.5]]))[0]
    mean_norm = (e0.norm() + e1.norm()) / 2
    assert past.norm().item() == pytest.approx(mean_norm.item(), rel=1e-5)
    direction = e0 + 2.0 * (e0 - e1)
    assert torch.allclose(past, direction / direction.norm() * mean_norm, atol=1e-5)
    assert torch.allclose(inside, 0.5 * e0 + 0.5 * e1, atol=1e-6)  # inside: not rescaled
    images, _ = _toy_data()
    kw = {"guidance_scale": 3.0, "seeds": [1, 2]}
    out = trained.img2img(images[:2], torch.tensor([[3.0, -2.0]] * 2), 0.75, **kw)
    plain = trained.img2img(images[:2], torch.tensor([[1.0, 0.0]] * 2), 0.75, **kw)
    assert out.shape == plain.shape and not torch.equal(out, plain)
