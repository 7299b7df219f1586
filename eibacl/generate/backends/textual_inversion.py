"""Textual inversion for Stable Diffusion 1.x: one learned token per class (DA-Fusion).

As DA-Fusion's ``fine_tune.py`` trains it: a placeholder token ``<class-name>``
(``num_vectors > 1``: ``<name>``, ``<name>_1``, ...) per class is added to the tokenizer, the
text encoder's token-embedding matrix is resized and the new rows are initialised from the
embedding of ``init_word``; then *every* class token is trained in one loop, with one
optimiser over the embedding matrix, on batches that cycle through the classes. Everything
else is frozen, and after every step all rows but the new tokens' are copied back from a
snapshot, so every other embedding stays bit-identical. The loss is the MSE between the
UNet's prediction and its target (the noise for epsilon prediction, the velocity for
v-prediction) for VAE latents of the training images, conditioned on "a photo of a <token>".
The latents are encoded once, not at every step.

The learned vectors are saved in the format ``pipe.load_textual_inversion`` reads: one folder
per class holding ``learned_embeds.safetensors`` = ``{token: tensor(num_vectors, dim)}``, plus a
``tokens.json`` manifest with the class order; :func:`load_into` loads them with diffusers' own
``load_textual_inversion``.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from eibacl.device import autocast

PROMPT_TEMPLATE = "a photo of a {}"
EMBEDDINGS_FILE = "learned_embeds.safetensors"
MANIFEST_FILE = "tokens.json"
# DA-Fusion's scripts/fine_tuning/fine_tune_*.sh (brandontrabucco/da-fusion): 1000 steps,
# batch 4, lr 5e-4 constant without warm-up, AdamW weight decay 1e-2, 512 px, fp16.
TI_STEPS = 1000
TI_LR = 5e-4
TI_BATCH_SIZE = 4


@dataclass
class TextualInversionResult:
    """What :func:`train_textual_inversion` learned.

    ``embeddings`` maps each class's placeholder token to its vectors, shape
    ``(num_vectors, dim)``, float32 on the CPU, in class order (the format
    ``load_textual_inversion`` reads). ``class_tokens[k]`` is the token of class ``k``;
    ``losses[i]`` the loss of optimiser step ``i`` (all classes together), ``micro_batches``
    how many forward/backward passes the loop made, ``seconds`` its wall time and
    ``encode_seconds`` that of encoding the latents.
    """

    embeddings: dict[str, torch.Tensor]
    class_tokens: list[str]
    losses: list[float] = field(default_factory=list)
    micro_batches: int = 0
    seconds: float = 0.0
    encode_seconds: float = 0.0

    @property
    def steps_per_s(self) -> float:
        return len(self.losses) / self.seconds if self.seconds > 0 else 0.0


def placeholder_tokens(class_names: Sequence[str]) -> list[str]:
    """One distinct ``<name>`` token per class: lower case, runs of other characters -> '-'."""
    tokens: list[str] = []
    for name in class_names:
        slug = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-") or "class"
        token = f"<{slug}>"
        suffix = 2
        while token in tokens:
            token = f"<{slug}-{suffix}>"
            suffix += 1
        tokens.append(token)
    return tokens


def expand_token(token: str, num_vectors: int) -> list[str]:
    """``<t>`` -> ``[<t>, <t>_1, ...]``, the multi-vector naming of diffusers."""
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def class_prompt(token: str, num_vectors: int = 1) -> str:
    """The conditioning prompt of a class, with a multi-vector token spelled out."""
    return PROMPT_TEMPLATE.format(" ".join(expand_token(token, num_vectors)))


def _components(pipe_or_components: Any) -> dict[str, Any]:
    if isinstance(pipe_or_components, Mapping):
        comps = dict(pipe_or_components)
    else:
        comps = dict(getattr(pipe_or_components, "components", {}))
    missing = [
        k for k in ("tokenizer", "text_encoder", "vae", "unet", "scheduler") if not comps.get(k)
    ]
    if missing:
        raise ValueError(f"textual inversion needs the pipeline components {missing}")
    return comps


def pipeline_resolution(vae: Any, unet: Any) -> int:
    """The native image size of a pipeline: UNet sample size times the VAE downsampling."""
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    size = unet.config.sample_size
    if isinstance(size, (list, tuple)):
        size = size[0]
    return int(size) * scale


def images_to_model_range(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 N×C×H×W (C = 1 or 3) -> float32 N×3×res×res in [-1, 1] (bicubic, antialiased)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"expected uint8 images N×C×H×W with C = 1 or 3, got {tuple(images.shape)}"
        )
    x = images.float() / 255.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (resolution, resolution):
        x = F.interpolate(
            x, size=(resolution, resolution), mode="bicubic", antialias=True, align_corners=False
        )
    return (x.clamp(0, 1) * 2 - 1).contiguous()


def add_placeholder_tokens(
    tokenizer: Any, text_encoder: Any, tokens: Sequence[str], init_word: str
) -> list[int]:
    """Add tokens (reusing ones added before), grow the embedding matrix, init new rows.

    Returns the token ids in the order of ``tokens``. A token that is part of the base
    vocabulary is refused; added tokens from an earlier call are re-initialised.
    """
    base_vocab = tokenizer.get_vocab()
    added = getattr(tokenizer, "added_tokens_encoder", {})
    for tok in tokens:
        if tok in base_vocab and tok not in added:
            raise ValueError(f"placeholder token {tok!r} is already a word of the tokenizer")
    init_ids = tokenizer.encode(init_word, add_special_tokens=False)
    if not init_ids:
        raise ValueError(f"init_word={init_word!r} gives no tokens")
    tokenizer.add_tokens(list(tokens))
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    emb = text_encoder.get_input_embeddings()
    if len(tokenizer) > emb.weight.shape[0]:
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        emb = text_encoder.get_input_embeddings()
    with torch.no_grad():
        # A multi-token init word (e.g. in a small vocabulary) starts from the mean of its pieces.
        init = emb.weight[init_ids].float().mean(0)
        for i in ids:
            emb.weight[i] = init.to(emb.weight.dtype)
    return list(ids)


@dataclass
class LatentCache:
    """VAE latents of every training image, encoded once (DA-Fusion re-encodes every step).

    ``mean``/``std``: N x 2 x 4 x h x w float32 on the CPU, the latent distribution of the
    image and of its horizontal flip (index 1), sampled afresh at every step. ``extra``:
    N x 2 x 5 x h x w, the mask and masked-image latents an inpainting UNet (9 input
    channels) is conditioned on; None for a plain 4-channel UNet.
    """

    mean: torch.Tensor
    std: torch.Tensor
    extra: torch.Tensor | None = None


@torch.no_grad()
def encode_latents(
    vae: Any,
    images: torch.Tensor,
    resolution: int,
    *,
    masks: torch.Tensor | None = None,
    inpainting: bool = False,
    batch_size: int = 8,
    progress: bool = False,
) -> LatentCache:
    """Encode ``images`` (uint8 N x C x H x W; decoded per batch, so a memory-mapped tensor
    stays on disk) and their flips once. With ``inpainting`` the UNet's extra input is cached
    too: the mask at latent size and the latents of the image with the mask region blanked,
    as the inpainting pipeline builds them (a full mask where ``masks`` is None)."""
    device, dtype = vae.device, vae.dtype
    means, stds, extras = [], [], []
    bar = tqdm(total=len(images), desc="vae latents", disable=not progress, leave=False)
    for lo in range(0, len(images), batch_size):
        x = images_to_model_range(images[lo : lo + batch_size], resolution)
        x = torch.cat([x, x.flip(-1)]).to(device=device, dtype=dtype)
        dist = vae.encode(x).latent_dist
        n = len(x) // 2
        means.append(dist.mean.float().cpu().unflatten(0, (2, n)).transpose(0, 1))
        stds.append(dist.std.float().cpu().unflatten(0, (2, n)).transpose(0, 1))
        if inpainting:
            extras.append(
                _inpaint_latents(vae, x, masks, lo, n).unflatten(0, (2, n)).transpose(0, 1)
            )
        bar.update(n)
    bar.close()
    return LatentCache(
        mean=torch.cat(means), std=torch.cat(stds), extra=torch.cat(extras) if extras else None
    )


def _inpaint_latents(
    vae: Any, x: torch.Tensor, masks: torch.Tensor | None, lo: int, n: int
) -> torch.Tensor:
    """(2n) x 5 x h x w: the mask (1 = regenerate) at latent size, then the latents of the
    image with that region set to 0 (mid grey in [-1, 1]), as diffusers' inpainting does."""
    if masks is None:
        m = torch.ones(2 * n, 1, *x.shape[-2:])
    else:
        m = (masks[lo : lo + n] != 0).float()
        m = F.interpolate(m, size=x.shape[-2:], mode="nearest")
        m = torch.cat([m, m.flip(-1)])
    m = m.to(device=x.device, dtype=x.dtype)
    blanked = vae.encode(x * (m < 0.5)).latent_dist.mean * vae.config.scaling_factor
    small = F.interpolate(m, size=blanked.shape[-2:], mode="nearest")
    return torch.cat([small, blanked], dim=1).float().cpu()


def balanced_picks(
    labels: torch.Tensor, num_classes: int, start: int, count: int, gen: torch.Generator
) -> torch.Tensor:
    """Image indices for stream positions ``start .. start + count``: position p is an image
    of class p mod K drawn uniformly (DA-Fusion's BalancedSampler), so consecutive batches
    cycle through every class."""
    picks = torch.empty(count, dtype=torch.long)
    for i in range(count):
        pool = torch.nonzero(labels == (start + i) % num_classes).flatten()
        picks[i] = pool[torch.randint(len(pool), (1,), generator=gen)]
    return picks


def _prompt_ids(tokenizer: Any, class_tokens: Sequence[str], num_vectors: int) -> torch.Tensor:
    return tokenizer(
        [class_prompt(tok, num_vectors) for tok in class_tokens],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def _micro_batch_loss(
    comps: dict[str, Any],
    cache: LatentCache,
    picks: torch.Tensor,
    prompt_ids: torch.Tensor,
    labels: torch.Tensor,
    gen: torch.Generator,
    flip: bool,
) -> torch.Tensor:
    """The noise-prediction loss of one micro-batch of cached latents."""
    from diffusers.utils.torch_utils import randn_tensor

    unet, scheduler, text_encoder = comps["unet"], comps["noise_scheduler"], comps["text_encoder"]
    device, b = unet.device, len(picks)
    side = (torch.rand(b, generator=gen) < 0.5).long() if flip else torch.zeros(b, dtype=torch.long)
    mean, std = cache.mean[picks, side], cache.std[picks, side]
    eps = torch.randn(mean.shape, generator=gen)
    latents = ((mean + std * eps) * comps["vae"].config.scaling_factor).to(device)
    noise = randn_tensor(latents.shape, generator=gen, device=device, dtype=latents.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen).to(device)
    noisy = scheduler.add_noise(latents, noise, t)
    if cache.extra is not None:
        noisy = torch.cat([noisy, cache.extra[picks, side].to(device)], dim=1)
    hidden = text_encoder(prompt_ids[labels[picks]].to(device))[0]
    pred = unet(noisy.to(unet.dtype), t, encoder_hidden_states=hidden.to(unet.dtype)).sample
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = scheduler.get_velocity(latents, noise, t)
    elif kind == "sample":
        target = latents
    else:
        raise ValueError(f"unknown prediction_type {kind!r}")
    return F.mse_loss(pred.float(), target.float())


def _check_ti_inputs(
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    num_vectors: int,
    steps: int,
) -> None:
    if num_vectors < 1:
        raise ValueError(
            f"ti_vectors={num_vectors}: a class token needs at least 1 vector; use -P ti_vectors=1 "
            "(DA-Fusion's default) or more"
        )
    if steps < 0:
        raise ValueError(f"ti_steps={steps} must be >= 0")
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f"labels must lie in [0, {len(class_names)})")
    missing = sorted(set(range(len(class_names))) - set(labels.tolist()))
    if steps and missing:
        raise ValueError(
            f"textual inversion: class(es) {[class_names[k] for k in missing]} have no training "
            "image: add images of them or leave them out of the classes"
        )


def train_textual_inversion(
    pipe_or_components: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    *,
    init_word: str = "object",
    num_vectors: int = 1,
    steps: int = TI_STEPS,
    lr: float = TI_LR,
    batch_size: int = TI_BATCH_SIZE,
    seed: int = 0,
    progress: bool = True,
    resolution: int | None = None,
    weight_decay: float = 1e-2,
    flip: bool = True,
    masks: torch.Tensor | None = None,
) -> TextualInversionResult:
    """Learn every class token in one loop, in place in the pipeline's text encoder.

    As DA-Fusion's ``fine_tune.py``: one AdamW over the embedding matrix (all rows but the
    new tokens' are restored after each step, so they stay bit-identical), constant ``lr``,
    and each of the ``steps`` optimiser steps accumulates ceil(K / ``batch_size``)
    micro-batches drawn by :func:`balanced_picks`, so every step sees every class. VAE
    latents are encoded once (:func:`encode_latents`); images are flipped at random when
    ``flip``. On CUDA the forward pass runs under autocast (the UNet's half dtype). An
    inpainting UNet (9 input channels) is trained with the mask and masked-image latents it
    is later sampled with (``masks``: N x 1 x H x W, nonzero = object; None = full mask).
    """
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    _check_ti_inputs(images, labels, class_names, num_vectors, steps)
    comps = _components(pipe_or_components)
    tokenizer, text_encoder = comps["tokenizer"], comps["text_encoder"]
    vae, unet = comps["vae"], comps["unet"]
    from diffusers import DDPMScheduler

    comps["noise_scheduler"] = DDPMScheduler.from_config(comps["scheduler"].config)
    res = int(resolution or pipeline_resolution(vae, unet))
    class_tokens, all_ids = _new_tokens(comps, class_names, num_vectors, init_word)
    start = time.perf_counter()
    inpainting = unet.config.in_channels == 9
    cache = encode_latents(vae, images, res, masks=masks, inpainting=inpainting, progress=progress)
    encode_seconds = time.perf_counter() - start
    prompts = _prompt_ids(tokenizer, class_tokens, num_vectors)
    settings = dict(steps=steps, lr=lr, batch_size=batch_size, seed=seed, progress=progress)
    settings |= dict(weight_decay=weight_decay, flip=flip)
    losses, seconds = _optimise(comps, cache, labels, prompts, all_ids, **settings)
    return TextualInversionResult(
        embeddings=_learned(text_encoder, class_tokens, all_ids, num_vectors),
        class_tokens=class_tokens,
        losses=losses,
        micro_batches=steps * math.ceil(len(class_names) / max(1, batch_size)),
        seconds=seconds,
        encode_seconds=encode_seconds,
    )


def _new_tokens(
    comps: dict[str, Any], class_names: Sequence[str], num_vectors: int, init_word: str
) -> tuple[list[str], list[int]]:
    """One placeholder token per class (``num_vectors`` rows each), added to the tokenizer and
    the text encoder; returns the class tokens and the ids of all their rows."""
    class_tokens = placeholder_tokens(class_names)
    all_tokens = [t for tok in class_tokens for t in expand_token(tok, num_vectors)]
    ids = add_placeholder_tokens(comps["tokenizer"], comps["text_encoder"], all_tokens, init_word)
    return class_tokens, ids


def _learned(
    text_encoder: Any, class_tokens: list[str], all_ids: list[int], num_vectors: int
) -> dict[str, torch.Tensor]:
    """Each class token's learned rows (num_vectors x D), copied to the CPU."""
    weight = text_encoder.get_input_embeddings().weight
    return {
        tok: weight[all_ids[k * num_vectors : (k + 1) * num_vectors]].detach().float().cpu().clone()
        for k, tok in enumerate(class_tokens)
    }


def _optimise(
    comps: dict[str, Any],
    cache: LatentCache,
    labels: torch.Tensor,
    prompt_ids: torch.Tensor,
    trained_ids: list[int],
    **kw: Any,
) -> tuple[list[float], float]:
    """The one loop over every class token; returns the per-step losses and its seconds."""
    k = len(prompt_ids)  # one prompt per class
    accum = math.ceil(k / max(1, kw["batch_size"])) if k else 0
    with _embeddings_trainable(comps) as weight:
        return _loop(comps, cache, labels, prompt_ids, trained_ids, weight, k, accum, **kw)


@contextlib.contextmanager
def _embeddings_trainable(comps: dict[str, Any]) -> Iterator[torch.Tensor]:
    """Everything frozen but the text encoder's embedding matrix (yielded), in eval mode;
    the modes, dtype and gradients are put back afterwards."""
    text_encoder, vae, unet = comps["text_encoder"], comps["vae"], comps["unet"]
    # Train the embedding matrix in float32 even when the pipeline runs in half precision;
    # a half -> float -> half round trip leaves the untouched rows bit-identical.
    te_dtype = text_encoder.dtype
    text_encoder.to(dtype=torch.float32)
    for module in (vae, unet, text_encoder):
        module.requires_grad_(False)
    weight = text_encoder.get_input_embeddings().weight
    weight.requires_grad_(True)
    modes = (vae.training, unet.training, text_encoder.training)
    for module in (vae, unet, text_encoder):
        module.eval()  # CLIP's dropout is 0; eval keeps any other stochastic layer off
    try:
        yield weight
    finally:
        weight.requires_grad_(False)
        weight.grad = None
        text_encoder.to(dtype=te_dtype)
        for module, mode in zip((vae, unet, text_encoder), modes):
            module.train(mode)


def _loop(
    comps: dict[str, Any],
    cache: LatentCache,
    labels: torch.Tensor,
    prompt_ids: torch.Tensor,
    trained_ids: list[int],
    weight: torch.Tensor,
    k: int,
    accum: int,
    **kw: Any,
) -> tuple[list[float], float]:
    """Each step: `accum` balanced micro-batches, one optimiser step, the other rows put back."""
    unet = comps["unet"]
    keep = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
    keep[trained_ids] = False
    snapshot = weight.detach().clone()
    optimizer = torch.optim.AdamW([weight], lr=kw["lr"], weight_decay=kw["weight_decay"])
    half = unet.dtype if unet.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    scaler = torch.amp.GradScaler(
        "cuda", enabled=unet.device.type == "cuda" and half == torch.float16
    )
    gen = torch.Generator().manual_seed(kw["seed"])
    losses: list[float] = []
    bar = tqdm(
        total=kw["steps"], desc="textual inversion", disable=not kw["progress"] or not kw["steps"]
    )
    start = time.perf_counter()
    try:
        for step in range(kw["steps"] if k else 0):
            total = 0.0
            for micro in range(accum):
                first = (step * accum + micro) * kw["batch_size"]
                picks = balanced_picks(labels, k, first, kw["batch_size"], gen)
                with autocast(unet.device, half):
                    loss = _micro_batch_loss(
                        comps, cache, picks, prompt_ids, labels, gen, kw["flip"]
                    )
                scaler.scale(loss / accum).backward()
                total += float(loss.detach()) / accum
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                weight[keep] = snapshot[keep]
            losses.append(total)
            bar.update(1)
            bar.set_postfix(loss=f"{total:.4f}")
    finally:
        bar.close()
    return losses, time.perf_counter() - start


def save_embeddings(
    embeddings: Mapping[str, torch.Tensor],
    directory: Path | str,
    class_names: Sequence[str] | None = None,
) -> list[Path]:
    """Write one ``NNN/learned_embeds.safetensors`` per token (class order) and a manifest.

    Each file holds ``{token: tensor(num_vectors, dim)}``; ``pipe.load_textual_inversion(folder)``
    reads it directly. Returns the per-class folders.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    folders = []
    for i, (token, vectors) in enumerate(embeddings.items()):
        folder = directory / f"{i:03d}"
        folder.mkdir(exist_ok=True)
        tensor = vectors.detach().float().cpu().reshape(-1, vectors.shape[-1]).contiguous()
        save_file({token: tensor}, str(folder / EMBEDDINGS_FILE))
        folders.append(folder)
    manifest = {
        "tokens": list(embeddings),
        "folders": [f.name for f in folders],
        "class_names": list(class_names) if class_names is not None else None,
        "num_vectors": [int(v.reshape(-1, v.shape[-1]).shape[0]) for v in embeddings.values()],
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return folders


def read_manifest(directory: Path | str) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no textual-inversion manifest {path} (written by save_embeddings)"
        )
    return json.loads(path.read_text())


def load_into(pipe: Any, directory: Path | str) -> list[str]:
    """Load saved class tokens into ``pipe`` with diffusers' ``load_textual_inversion``.

    Returns the class tokens in class order. Refuses tokens the tokenizer already knows.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    tokens = list(manifest["tokens"])
    known = pipe.tokenizer.get_vocab()
    clash = [t for t in tokens if t in known]
    if clash:
        raise ValueError(
            f"tokens {clash} are already in the pipeline's tokenizer; load into a fresh pipeline"
        )
    if tokens:
        paths = [str(directory / name) for name in manifest["folders"]]
        pipe.load_textual_inversion(paths, local_files_only=True)
    return tokens
