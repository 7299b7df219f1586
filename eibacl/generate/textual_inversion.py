"""Textual inversion for Stable Diffusion 1.x: one learned token per class (DA-Fusion).

The recipe follows the diffusers ``textual_inversion`` example, trained class by class as in
DA-Fusion: a placeholder token ``<class-name>`` (``num_vectors > 1``: ``<name>``, ``<name>_1``,
...) is added to the tokenizer, the text encoder's token-embedding matrix is resized and the new
rows are initialised from the embedding of ``init_word``. Everything is frozen except the
embedding matrix; after every optimiser step all rows but the class's own are copied back from
a snapshot, so every other embedding stays bit-identical. The loss is the MSE between the UNet's
prediction and its target (the noise for epsilon prediction, the velocity for v-prediction)
for VAE latents of the class's training images, conditioned on "a photo of a <token>".

The learned vectors are saved in the format ``pipe.load_textual_inversion`` reads: one folder
per class holding ``learned_embeds.safetensors`` = ``{token: tensor(num_vectors, dim)}``, plus a
``tokens.json`` manifest with the class order; :func:`load_into` loads them with diffusers' own
``load_textual_inversion``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

PROMPT_TEMPLATE = "a photo of a {}"
EMBEDDINGS_FILE = "learned_embeds.safetensors"
MANIFEST_FILE = "tokens.json"


@dataclass
class TextualInversionResult:
    """What :func:`train_textual_inversion` learned.

    ``embeddings`` maps each class's placeholder token to its vectors, shape
    ``(num_vectors, dim)``, float32 on the CPU, in class order (the format
    ``load_textual_inversion`` reads). ``class_tokens[k]`` is the token of class ``k``;
    ``losses[k]`` the per-step training losses of class ``k``.
    """

    embeddings: dict[str, torch.Tensor]
    class_tokens: list[str]
    losses: list[list[float]] = field(default_factory=list)


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


def train_textual_inversion(
    pipe_or_components: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    *,
    init_word: str = "object",
    num_vectors: int = 1,
    steps: int = 1000,
    lr: float = 5e-4,
    batch_size: int = 4,
    seed: int = 0,
    progress: bool = True,
    resolution: int | None = None,
    weight_decay: float = 1e-2,
    flip: bool = True,
) -> TextualInversionResult:
    """Learn one placeholder token per class, in place in the pipeline's text encoder.

    ``steps`` is the number of optimiser steps *per class* (DA-Fusion trains each class's token
    on its own; a fresh AdamW per class). ``images`` are uint8 N×C×H×W (C = 1 or 3, any size),
    resized to ``resolution`` (default: the pipeline's native size); ``labels`` int64 in
    ``[0, len(class_names))``. Images are flipped horizontally at random when ``flip``.
    After the call the pipeline's tokenizer knows the tokens and its text encoder holds the
    learned rows; the returned result has the vectors for :func:`save_embeddings`.
    """
    if num_vectors < 1:
        raise ValueError(f"num_vectors={num_vectors} must be >= 1")
    if steps < 0:
        raise ValueError(f"steps={steps} must be >= 0")
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f"labels must lie in [0, {len(class_names)})")

    comps = _components(pipe_or_components)
    tokenizer, text_encoder = comps["tokenizer"], comps["text_encoder"]
    vae, unet = comps["vae"], comps["unet"]
    from diffusers import DDPMScheduler
    from diffusers.utils.torch_utils import randn_tensor

    noise_scheduler = DDPMScheduler.from_config(comps["scheduler"].config)
    prediction_type = noise_scheduler.config.prediction_type
    res = int(resolution or pipeline_resolution(vae, unet))
    device = unet.device
    unet_dtype = unet.dtype

    class_tokens = placeholder_tokens(class_names)
    all_tokens = [t for tok in class_tokens for t in expand_token(tok, num_vectors)]
    all_ids = add_placeholder_tokens(tokenizer, text_encoder, all_tokens, init_word)
    class_ids = [all_ids[k * num_vectors : (k + 1) * num_vectors] for k in range(len(class_names))]

    # Train the embedding matrix in float32 even when the pipeline runs in half precision;
    # a half -> float -> half round trip leaves the untouched rows bit-identical.
    te_dtype = text_encoder.dtype
    text_encoder.to(dtype=torch.float32)
    vae.requires_grad_(False)
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    weight = text_encoder.get_input_embeddings().weight
    weight.requires_grad_(True)
    modes = (vae.training, unet.training, text_encoder.training)
    vae.eval()
    unet.eval()
    text_encoder.eval()  # CLIP's dropout is 0; eval keeps any other stochastic layer off

    gen = torch.Generator().manual_seed(seed)
    losses: list[list[float]] = []
    total = steps * len(class_names)
    bar = tqdm(total=total, desc="textual inversion", disable=not progress or total == 0)
    try:
        for k, ids in enumerate(class_ids):
            pool = torch.nonzero(labels == k).flatten()
            losses.append([])
            if len(pool) == 0 or steps == 0:
                bar.update(steps)
                continue
            input_ids = tokenizer(
                class_prompt(class_tokens[k], num_vectors),
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(device)
            keep = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
            keep[ids] = False
            snapshot = weight.detach().clone()
            optimizer = torch.optim.AdamW([weight], lr=lr, weight_decay=weight_decay)
            for _ in range(steps):
                pick = pool[torch.randint(len(pool), (batch_size,), generator=gen)]
                x = images_to_model_range(images[pick], res)
                if flip:
                    flips = torch.rand(batch_size, generator=gen) < 0.5
                    x = torch.where(flips[:, None, None, None], x.flip(-1), x)
                x = x.to(device=device, dtype=vae.dtype)
                with torch.no_grad():
                    dist = vae.encode(x).latent_dist
                    latents = dist.sample(generator=gen) * vae.config.scaling_factor
                latents = latents.to(unet_dtype)
                noise = randn_tensor(latents.shape, generator=gen, device=device, dtype=unet_dtype)
                t = torch.randint(
                    0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=gen
                ).to(device)
                noisy = noise_scheduler.add_noise(latents, noise, t)
                hidden = text_encoder(input_ids.expand(batch_size, -1))[0].to(unet_dtype)
                pred = unet(noisy, t, encoder_hidden_states=hidden).sample
                if prediction_type == "epsilon":
                    target = noise
                elif prediction_type == "v_prediction":
                    target = noise_scheduler.get_velocity(latents, noise, t)
                elif prediction_type == "sample":
                    target = latents
                else:
                    raise ValueError(f"unknown prediction_type {prediction_type!r}")
                loss = F.mse_loss(pred.float(), target.float())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    weight[keep] = snapshot[keep]
                value = float(loss.detach())
                losses[-1].append(value)
                bar.update(1)
                bar.set_postfix(cls=k, loss=f"{value:.4f}")
            del optimizer, snapshot
    finally:
        bar.close()
        weight.requires_grad_(False)
        weight.grad = None
        text_encoder.to(dtype=te_dtype)
        for module, mode in zip((vae, unet, text_encoder), modes):
            module.train(mode)

    weight = text_encoder.get_input_embeddings().weight
    embeddings = {
        tok: weight[ids].detach().float().cpu().clone() for tok, ids in zip(class_tokens, class_ids)
    }
    return TextualInversionResult(embeddings=embeddings, class_tokens=class_tokens, losses=losses)


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
