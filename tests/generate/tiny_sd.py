"""A tiny, randomly initialised Stable Diffusion 1.x pipeline built from configs.

Nothing is downloaded: the tokenizer is written from a byte-level vocabulary made here, the
models are initialised from small configs with a fixed seed, and the pipeline is saved with
``save_pretrained`` so that the real ``from_pretrained`` path (the diffusers folder layout) is
what the tests exercise. Used by ``tests/generate/conftest.py`` and ``bench/bench_sd.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch

# Words of "a photo of a <token>" and of the default init word get BPE merges, so that the
# tokenizer behaves like CLIP's (one token per common word) rather than per character.
_MERGES: list[tuple[str, str]] = [
    ("p", "h"),
    ("o", "t"),
    ("ph", "ot"),
    ("phot", "o</w>"),
    ("o", "f</w>"),
    ("o", "b"),
    ("ob", "j"),
    ("e", "c"),
    ("obj", "ec"),
    ("objec", "t</w>"),
]

TINY_RESOLUTION = 32


def _byte_level_chars() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE (GPT-2/CLIP) uses for raw bytes."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def tiny_clip_tokenizer(model_max_length: int = 77):
    """A CLIPTokenizer over single bytes plus a few merges (transformers 5: vocab=/merges=)."""
    from transformers import CLIPTokenizer

    chars = _byte_level_chars()
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for a, b in _MERGES:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=list(_MERGES), model_max_length=model_max_length)


def build_tiny_sd_components(seed: int = 0, *, inpaint_unet: bool = False) -> dict:
    """Components of a StableDiffusionImg2ImgPipeline at 32x32 px (latents 16x16)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 2,
        in_channels=9 if inpaint_unet else 4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=TINY_RESOLUTION,
    )
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=32,
        layer_norm_eps=1e-5,
    )
    text_encoder = CLIPTextModel(text_config)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


def build_tiny_sd(directory: Path | str, seed: int = 0, *, inpaint_unet: bool = False) -> Path:
    """Save a tiny random SD img2img pipeline in the diffusers folder layout; return the folder.
    ``inpaint_unet``: a 9-channel UNet, as an inpainting checkpoint has."""
    from diffusers import StableDiffusionImg2ImgPipeline

    directory = Path(directory)
    pipe = StableDiffusionImg2ImgPipeline(
        **build_tiny_sd_components(seed, inpaint_unet=inpaint_unet)
    )
    pipe.save_pretrained(directory)
    return directory
