"""Stable Diffusion backend and textual inversion on a tiny random pipeline (CPU, seconds)."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from eibacl.generate.backends.stable_diffusion import (  # noqa: E402
    StableDiffusionBackend,
    StableDiffusionWeightsError,
    resolve_sd_model,
)
from eibacl.generate.backends.textual_inversion import (  # noqa: E402
    load_into,
    placeholder_tokens,
    save_embeddings,
    train_textual_inversion,
)

CLASSES = ["T-shirt/top", "Ankle boot"]


def _load_pipe(folder):
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        str(folder),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        local_files_only=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _data(n=6, channels=1, size=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % len(CLASSES)
    return images, labels


@pytest.fixture(scope="module")
def fitted(tiny_sd_dir):
    backend = StableDiffusionBackend.from_pretrained(
        str(tiny_sd_dir),
        device="cpu",
        ti_steps=2,
        ti_batch_size=2,
        inference_steps=4,
        batch_size=4,
    )
    before = backend.pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    fingerprint_before = backend.fingerprint()
    images, labels = _data()
    backend.fit(images, labels, CLASSES, progress=False)
    return backend, before, fingerprint_before


def test_placeholder_tokens_are_distinct_and_safe():
    assert placeholder_tokens(["T-shirt/top", "Ankle boot", "ankle  boot"]) == [
        "<t-shirt-top>",
        "<ankle-boot>",
        "<ankle-boot-2>",
    ]


def test_textual_inversion_changes_only_new_rows(fitted):
    backend, before, fingerprint_before = fitted
    after = backend.pipe.text_encoder.get_input_embeddings().weight.detach()
    n_old = before.shape[0]
    assert after.shape[0] == n_old + len(CLASSES)
    assert torch.equal(after[:n_old], before)  # bit-identical
    tok = backend.pipe.tokenizer
    ids = tok.convert_tokens_to_ids(backend.class_tokens)
    assert sorted(ids) == list(range(n_old, n_old + len(CLASSES)))
    init = before[tok.encode("object", add_special_tokens=False)].mean(0)
    for t, i in zip(backend.class_tokens, ids):
        assert not torch.equal(after[i], init)  # trained away from the init word
        assert torch.equal(backend.embeddings[t][0], after[i])
    assert len(backend.ti_losses) == 2 and all(math.isfinite(v) for v in backend.ti_losses)
    assert backend.ti_stats["ti/steps"] == 2 and backend.ti_stats["ti/micro_batches"] == 2
    assert backend.fingerprint() != fingerprint_before


def test_multi_vector_v_prediction_save_and_load_textual_inversion(tiny_sd_dir, tmp_path):
    from diffusers import DDIMScheduler

    pipe = _load_pipe(tiny_sd_dir)
    comps = dict(pipe.components)
    comps["scheduler"] = DDIMScheduler.from_config(
        pipe.scheduler.config, prediction_type="v_prediction"
    )
    before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    images, labels = _data(channels=3, size=20)
    result = train_textual_inversion(
        comps, images, labels, CLASSES, num_vectors=2, steps=1, batch_size=2, progress=False
    )
    after = pipe.text_encoder.get_input_embeddings().weight.detach()
    assert after.shape[0] == before.shape[0] + 4
    assert torch.equal(after[: before.shape[0]], before)
    assert len(result.losses) == 1 and math.isfinite(result.losses[0])
    assert [tuple(v.shape) for v in result.embeddings.values()] == [(2, 32), (2, 32)]

    folders = save_embeddings(result.embeddings, tmp_path / "ti", CLASSES)
    # each class folder is a plain diffusers textual-inversion folder
    fresh = _load_pipe(tiny_sd_dir)
    fresh.load_textual_inversion(str(folders[1]), local_files_only=True)
    token = result.class_tokens[1]
    ids = fresh.tokenizer.convert_tokens_to_ids([token, f"{token}_1"])
    w = fresh.text_encoder.get_input_embeddings().weight
    assert torch.equal(w[ids], result.embeddings[token])

    fresh2 = _load_pipe(tiny_sd_dir)
    tokens = load_into(fresh2, tmp_path / "ti")
    assert tokens == result.class_tokens
    w2 = fresh2.text_encoder.get_input_embeddings().weight
    for t in tokens:
        ids = fresh2.tokenizer.convert_tokens_to_ids([t, f"{t}_1"])
        assert torch.equal(w2[ids], result.embeddings[t])
    # the pipeline's own prompt handling spells the multi-vector token out
    assert fresh2.maybe_convert_prompt(f"a photo of a {token}", fresh2.tokenizer) == (
        f"a photo of a {token} {token}_1"
    )


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 40)])
def test_img2img_shapes_determinism_and_mix(fitted, channels, size):
    backend, _, _ = fitted
    images, _ = _data(n=3, channels=channels, size=size, seed=1)
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    kw = {"guidance_scale": 3.0}
    a = backend.img2img(images, weights, 0.5, seeds=[1, 2, 3], **kw)
    b = backend.img2img(images, weights, 0.5, seeds=[1, 2, 3], **kw)
    c = backend.img2img(images, weights, 0.5, seeds=[4, 5, 6], **kw)
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # an image's result depends on its seed and conditioning, not on its batch neighbours
    single = backend.img2img(images[2:], weights[2:], 0.5, seeds=[3], **kw)
    assert (single.int() - a[2:].int()).abs().max() <= 1
    # the class-mix row conditions differently from either pure class
    pure = backend.img2img(images[2:].repeat(2, 1, 1, 1), weights[:2], 0.5, seeds=[3, 3], **kw)
    assert not torch.equal(single[0], pure[0]) and not torch.equal(single[0], pure[1])


def test_img2img_small_strength_and_bad_inputs(fitted):
    backend, _, _ = fitted
    images, _ = _data(n=1, channels=3, size=16)
    out = backend.img2img(images, torch.tensor([[1.0, 0.0]]), 0.05, guidance_scale=1.0, seeds=[0])
    assert out.shape == images.shape
    with pytest.raises(ValueError, match="seed"):
        backend.img2img(images, torch.tensor([[1.0, 0.0]]), 0.5, guidance_scale=1.0, seeds=[])
    with pytest.raises(ValueError, match="class_weights"):
        backend.img2img(images, torch.ones(1, 4) / 4, 0.5, guidance_scale=1.0, seeds=[0])
    with pytest.raises(ValueError, match="negative_weights"):
        backend.img2img(
            images,
            torch.tensor([[1.0, 0.0]]),
            0.5,
            guidance_scale=3.0,
            seeds=[0],
            negative_weights=torch.tensor([[1.0, 0.0]]),
        )


def test_extrapolated_prompt_lies_past_the_source_at_the_prompts_norm(fitted):
    from eibacl.generate.backends.protocol import mix_rows

    backend, _, _ = fitted
    cond, uncond = backend._conditioning()
    table = torch.cat([cond, uncond])
    past = mix_rows(torch.tensor([[2.0, -1.0]]), table, 2)[0]  # e0 + (e0 - e1), per token
    direction = 2.0 * cond[0] - cond[1]
    mean_norm = cond.norm(dim=-1).mean(dim=0)  # per token position
    assert torch.allclose(past.norm(dim=-1), mean_norm, rtol=1e-4)
    expected = direction / direction.norm(dim=-1, keepdim=True) * mean_norm[:, None]
    assert torch.allclose(past, expected, atol=1e-5)
    shared = (cond[0] - cond[1]).norm(dim=-1) < 1e-6  # before the class token: same prompt
    assert shared.any() and torch.allclose(past[shared], cond[0][shared], atol=1e-5)
    inside = mix_rows(torch.tensor([[0.5, 0.5]]), table, 2)[0]
    assert torch.allclose(inside, 0.5 * cond[0] + 0.5 * cond[1], atol=1e-6)


def test_away_and_extrapolate_condition_differently(fitted):
    backend, _, _ = fitted
    images, _ = _data(n=2, channels=1, size=28, seed=2)
    kw = {"guidance_scale": 3.0, "seeds": [5, 6]}
    plain = backend.img2img(images, torch.tensor([[1.0, 0.0]] * 2), 0.75, **kw)
    null_named = backend.img2img(
        images,
        torch.tensor([[1.0, 0.0]] * 2),
        0.75,
        negative_weights=torch.tensor([[0.0, 0.0, 1.0]] * 2),
        **kw,
    )
    assert torch.equal(plain, null_named)  # the default negative is the empty prompt
    away = backend.img2img(
        images,
        torch.tensor([[0.0, 0.0, 1.0]] * 2),
        0.75,
        negative_weights=torch.tensor([[1.0, 0.0, 0.0]] * 2),
        **kw,
    )
    unconditional = backend.img2img(images, torch.tensor([[0.0, 0.0, 1.0]] * 2), 0.75, **kw)
    past = backend.img2img(images, torch.tensor([[2.0, -1.0]] * 2), 0.75, **kw)
    for other in (plain, unconditional, past):
        assert not torch.equal(away, other)
    assert not torch.equal(past, plain)


def test_masks_inpaint_only_the_object(fitted):
    backend, _, _ = fitted
    images, _ = _data(n=2, channels=1, size=28, seed=2)
    masks = torch.zeros(2, 1, 28, 28, dtype=torch.bool)
    masks[:, :, 6:22, 8:20] = True
    out = backend.img2img(
        images,
        torch.tensor([[1.0, 0.0], [0.5, 0.5]]),
        0.75,
        guidance_scale=3.0,
        seeds=[0, 1],
        masks=masks,
    )
    assert out.shape == images.shape and out.dtype == torch.uint8
    outside = ~masks.expand_as(images)
    assert torch.equal(out[outside], images[outside])
    assert not torch.equal(out[~outside], images[~outside])


def test_save_load_roundtrip(fitted, tiny_sd_dir, tmp_path):
    backend, _, _ = fitted
    backend.save(tmp_path / "gen")
    moved = tmp_path / "moved-sd"
    shutil.copytree(tiny_sd_dir, moved)
    loaded = StableDiffusionBackend.load(tmp_path / "gen", sd_model=str(moved), device="cpu")
    assert loaded.class_names == CLASSES
    assert loaded.class_tokens == backend.class_tokens
    assert loaded.settings.inference_steps == backend.settings.inference_steps
    for t in backend.class_tokens:
        assert torch.equal(loaded.embeddings[t], backend.embeddings[t])
    assert loaded.fingerprint() == backend.fingerprint()  # content, not location
    images, _ = _data(n=2, channels=3, size=24, seed=3)
    weights = torch.tensor([[1.0, 0.0], [0.3, 0.7]])
    a = backend.img2img(images, weights, 0.75, guidance_scale=2.0, seeds=[7, 8])
    b = loaded.img2img(images, weights, 0.75, guidance_scale=2.0, seeds=[7, 8])
    assert torch.equal(a, b)


def test_missing_weights_name_the_fix(tmp_path, tiny_sd_dir):
    missing = tmp_path / "nowhere" / "sd15"
    with pytest.raises(FileNotFoundError) as err:
        StableDiffusionBackend.from_pretrained(str(missing))
    text = str(err.value)
    assert str(missing) in text and "does not exist" in text
    assert "-P sd_model=" in text and "download" in text and "unet/" in text

    partial = tmp_path / "partial"
    shutil.copytree(tiny_sd_dir, partial, ignore=shutil.ignore_patterns("unet"))
    with pytest.raises(StableDiffusionWeightsError) as err:
        StableDiffusionBackend.from_pretrained(str(partial))
    text = str(err.value)
    assert "missing: unet/" in text and str(partial) in text and "-P sd_model=" in text

    with pytest.raises(FileNotFoundError, match="empty"):
        resolve_sd_model("")
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        resolve_sd_model("no-such-owner/no-such-model-eibacl")
