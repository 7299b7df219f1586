"""Textual inversion as DA-Fusion trains it: every class token in one loop, latents encoded
once, batches that cycle through the classes (tiny random SD pipeline, CPU)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from eibacl.generate.backends.textual_inversion import (  # noqa: E402
    balanced_picks,
    train_textual_inversion,
)
from tests.generate.tiny_sd import build_tiny_sd_components  # noqa: E402

CLASSES = ["ring", "bolt", "gear"]


def _images(n: int = 9, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return images, torch.arange(n) % len(CLASSES)


class _Counter:
    """Wraps a module's method and counts its calls (and the images it saw)."""

    def __init__(self, module, name):
        self.calls, self.images = 0, 0
        inner = getattr(module, name)

        def wrapped(x, *args, **kwargs):
            self.calls += 1
            self.images += len(x)
            return inner(x, *args, **kwargs)

        setattr(module, name, wrapped)


def test_balanced_picks_cycle_through_the_classes():
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 0, 2])
    gen = torch.Generator().manual_seed(0)
    picks = balanced_picks(labels, 3, 4, 6, gen)  # positions 4..9: classes 1,2,0,1,2,0
    assert labels[picks].tolist() == [1, 2, 0, 1, 2, 0]


def test_all_tokens_train_in_one_loop_with_latents_encoded_once(monkeypatch):
    comps = build_tiny_sd_components()
    images, labels = _images()
    encodes = _Counter(comps["vae"], "encode")
    unet_calls = _Counter(comps["unet"], "forward")
    optimisers = []

    class CountingAdamW(torch.optim.AdamW):
        def __init__(self, params, **kwargs):
            params = list(params)
            optimisers.append(params)
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", CountingAdamW)
    before = comps["text_encoder"].get_input_embeddings().weight.detach().clone()
    result = train_textual_inversion(
        comps, images, labels, CLASSES, steps=3, batch_size=2, progress=False
    )
    # 3 classes, micro-batches of 2: ceil(3 / 2) = 2 micro-batches per step, every class in
    # each step; one loop of 3 steps, not 3 classes x 3 steps
    assert len(result.losses) == 3 and result.micro_batches == 6
    embedding = comps["text_encoder"].get_input_embeddings().weight
    assert len(optimisers) == 1 and optimisers[0] == [embedding]  # one optimiser, every row
    assert unet_calls.calls == 6 and unet_calls.images == 12
    # 9 images and their flips encoded once, in batches of 8: 2 calls, 18 images
    assert encodes.calls == 2 and encodes.images == 18
    after = comps["text_encoder"].get_input_embeddings().weight.detach()
    n_old = before.shape[0]
    assert torch.equal(after[:n_old], before)
    moved = [not torch.equal(after[n_old + k], after[n_old]) for k in range(1, 3)]
    assert after.shape[0] == n_old + 3 and all(moved)  # every token left the shared init
    assert result.seconds > 0 and result.steps_per_s > 0


def test_ti_vectors_below_one_is_refused_in_one_line():
    comps = build_tiny_sd_components()
    images, labels = _images()
    with pytest.raises(ValueError, match=r"ti_vectors=0.*-P ti_vectors=1"):
        train_textual_inversion(comps, images, labels, CLASSES, num_vectors=0, progress=False)


def test_inpainting_unet_trains_on_the_masks_it_is_sampled_with():
    comps = build_tiny_sd_components(inpaint_unet=True)
    images, labels = _images()
    masks = torch.zeros(len(images), 1, 32, 32, dtype=torch.uint8)
    masks[:, :, 8:24, 8:24] = 1
    encodes = _Counter(comps["vae"], "encode")
    result = train_textual_inversion(
        comps, images, labels, CLASSES, steps=2, batch_size=3, masks=masks, progress=False
    )
    assert len(result.losses) == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    # the images and the masked images (with flips) are encoded once each
    assert encodes.images == 2 * 18
