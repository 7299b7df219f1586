"""Stable Diffusion 1.x generator backend (DA-Fusion) on diffusers.

``StableDiffusionBackend`` learns one textual-inversion token per class, all in one loop
(``fit``), and makes variants of real images with SDEdit image-to-image (``img2img``)
conditioned on "a photo of a <class-k>", or on a weighted mix of several classes' prompt
embeddings (near-OOD).

Choices worth knowing:

- Weights come from a local folder in the diffusers layout (or a hub id already in the local
  Hugging Face cache); nothing is downloaded. The folder is checked before diffusers sees it, so
  a missing or incomplete folder gives a message that names the missing part and the fix.
- Conditioning: the prompt embeddings (text-encoder hidden states, 77×768 for SD 1.x) of every
  class prompt are computed once and cached; a ``class_weights`` row mixes them linearly. The
  negative (unconditional) embedding is that of the empty prompt.
- Images of any size and 1 or 3 channels are resized (bicubic, antialiased) to the pipeline's
  square resolution, grey is repeated to RGB, and the result is resized back and (for grey)
  averaged over channels.
- Masks: ``StableDiffusionInpaintPipeline`` is built from the same components. With a real
  inpainting checkpoint (9-channel UNet) it conditions on mask + masked image; with a standard
  4-channel UNet diffusers runs the same pipeline by blending the known background latents back
  at every step (RePaint-style). Either way the original pixels outside the mask are pasted back
  at the input resolution, so only the object region changes. A 9-channel checkpoint without
  masks runs the inpainting pipeline with a full mask (plain img2img cannot drive it).
- Randomness: one CPU ``torch.Generator`` per image, seeded from ``seeds``; an image's output does
  not depend on the other images in the batch (up to floating-point batching effects on GPUs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from eibacl.config import GenerateConfig
from eibacl.device import resolve_device
from eibacl.generate.backends.protocol import mix_rows, validate_img2img_inputs, validate_strength
from eibacl.generate.backends.textual_inversion import (
    PROMPT_TEMPLATE,
    TI_BATCH_SIZE,
    TI_LR,
    load_into,
    pipeline_resolution,
    save_embeddings,
    train_textual_inversion,
)

if TYPE_CHECKING:
    from eibacl.data.training_data import TrainingData

DEFAULT_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SETTINGS_FILE = "stable_diffusion.json"
log = logging.getLogger(__name__)
EMBEDDINGS_DIR = "embeddings"
_FORMAT_VERSION = 1

# Sub-folders/files of the diffusers layout and the weight-file stems each one needs.
_WEIGHT_STEMS = {
    "unet": ("diffusion_pytorch_model",),
    "vae": ("diffusion_pytorch_model",),
    "text_encoder": ("model", "pytorch_model"),
}
_CONFIG_FILES = {
    "unet": "config.json",
    "vae": "config.json",
    "text_encoder": "config.json",
    "scheduler": "scheduler_config.json",
}

LAYOUT_HELP = """\
Expected a Stable Diffusion 1.x folder in the diffusers layout:
  <sd_model>/model_index.json
  <sd_model>/unet/config.json          + diffusion_pytorch_model.safetensors (or .bin, .fp16.*)
  <sd_model>/vae/config.json           + diffusion_pytorch_model.safetensors (or .bin, .fp16.*)
  <sd_model>/text_encoder/config.json  + model.safetensors (or pytorch_model.bin, .fp16.*)
  <sd_model>/tokenizer/                  vocab.json + merges.txt (or tokenizer.json)
  <sd_model>/scheduler/scheduler_config.json
or a hub id already in the local Hugging Face cache. Nothing can be downloaded here. On a
machine with network run
  hf download {hub} --local-dir /path/to/sd15 \\
    --include "model_index.json" "unet/*" "vae/*" "text_encoder/*" "tokenizer/*" "scheduler/*" \\
    --exclude "*.bin" "*non_ema*"
(older huggingface_hub: `huggingface-cli download` with the same arguments), copy the folder to
this machine and pass it: `-P sd_model=/path/to/sd15` (Python: sd_model="/path/to/sd15")."""


class StableDiffusionWeightsError(FileNotFoundError):
    """The Stable Diffusion weights named by ``sd_model`` are missing or incomplete."""


def _weights_error(sd_model: str, problem: str) -> StableDiffusionWeightsError:
    help_text = LAYOUT_HELP.format(hub=DEFAULT_HUB_ID)
    return StableDiffusionWeightsError(f"sd_model={sd_model!r}: {problem}\n{help_text}")


def _weight_files(folder: Path, stems: Sequence[str]) -> tuple[bool, bool]:
    """(has standard weights, has fp16-variant weights) for a component folder."""
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    standard = variant = False
    for stem in stems:
        for ext in (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json"):
            standard |= f"{stem}{ext}" in names
            variant |= f"{stem}.fp16{ext}" in names
        # sharded: <stem>-00001-of-00002.safetensors
        standard |= any(re.fullmatch(rf"{stem}-\d+-of-\d+\.(safetensors|bin)", n) for n in names)
    return standard, variant


def check_sd_folder(folder: Path) -> tuple[list[str], str | None]:
    """Missing parts of a diffusers SD folder (relative paths), and the weight variant to load."""
    missing: list[str] = []
    if not (folder / "model_index.json").is_file():
        missing.append("model_index.json")
    for comp, name in _CONFIG_FILES.items():
        if not (folder / comp).is_dir():
            missing.append(f"{comp}/")
        elif not (folder / comp / name).is_file():
            missing.append(f"{comp}/{name}")
    tok = folder / "tokenizer"
    if not tok.is_dir():
        missing.append("tokenizer/")
    elif not (tok / "tokenizer.json").is_file() and not (
        (tok / "vocab.json").is_file() and (tok / "merges.txt").is_file()
    ):
        missing.append("tokenizer/vocab.json + tokenizer/merges.txt (or tokenizer/tokenizer.json)")
    only_fp16 = []
    for comp, stems in _WEIGHT_STEMS.items():
        if not (folder / comp).is_dir():
            continue
        standard, fp16 = _weight_files(folder / comp, stems)
        if not standard and not fp16:
            missing.append(f"{comp}/{stems[0]}.safetensors")
        only_fp16.append(fp16 and not standard)
    variant = "fp16" if only_fp16 and all(only_fp16) else None
    return missing, variant


def resolve_sd_model(sd_model: str) -> tuple[Path, str | None]:
    """Find the local folder of ``sd_model`` and check it; raise a helpful error otherwise.

    ``sd_model`` is a folder path, or a hub id (``owner/name``) already in the local Hugging Face
    cache. Returns the folder and the weight variant to load (``"fp16"`` when only those exist).
    """
    if not str(sd_model).strip():
        raise _weights_error(str(sd_model), "no Stable Diffusion model was given (empty).")
    path = Path(sd_model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise _weights_error(sd_model, f"{path} is a file, not a diffusers folder.")
        folder = path
        where = f"the folder {path}"
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", str(sd_model)):
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(sd_model), local_files_only=True))
        except Exception as exc:  # LocalEntryNotFoundError, offline errors, ...
            raise _weights_error(
                sd_model,
                "no such folder, and this hub id is not in the local Hugging Face cache "
                f"({type(exc).__name__}).",
            ) from exc
        where = f"the cached snapshot {folder}"
    else:
        raise _weights_error(sd_model, f"the folder {path} does not exist.")
    missing, variant = check_sd_folder(folder)
    if missing:
        raise _weights_error(sd_model, f"{where} is incomplete; missing: {', '.join(missing)}.")
    return folder, variant


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float16": torch.float16,
        "fp16": torch.float16,
        "half": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float32": torch.float32,
        "fp32": torch.float32,
    }
    if dtype not in names:
        raise ValueError(f"dtype={dtype!r}: use one of {sorted(names)} or None")
    return names[dtype]


def sd_geometry(sd_model: str) -> tuple[int, int]:
    """(native resolution, UNet input channels) of an SD folder, read from its config files
    without loading weights: sample size x VAE downsampling; 9 channels = inpainting."""
    folder, _ = resolve_sd_model(sd_model)
    unet = json.loads((folder / "unet" / "config.json").read_text())
    vae = json.loads((folder / "vae" / "config.json").read_text())
    size = unet.get("sample_size", 64)
    size = size[0] if isinstance(size, (list, tuple)) else size
    scale = 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)
    return int(size) * scale, int(unet.get("in_channels", 4))


def check_inpainting(sd_model: str, mask_kind: str) -> None:
    """Masks need an inpainting UNet (9 input channels: latents, mask, masked image)."""
    channels = sd_geometry(sd_model)[1]
    if mask_kind != "none" and channels != 9:
        raise ValueError(
            f"sd_model={sd_model!r} has a {channels}-channel UNet, not an inpainting one (9), "
            f"but the data has masks (generator/masks={mask_kind}): give an inpainting "
            "checkpoint (e.g. a local copy of stable-diffusion-v1-5/stable-diffusion-inpainting) "
            "or pass -P use_masks=false for plain img2img"
        )


def model_digest(folder: Path) -> str:
    """A cheap content digest of an SD folder: configs in full, weights by size + head + tail.

    Hashing gigabytes of weights on every call would cost seconds; the first and last MiB of each
    weight file (safetensors headers included) plus its size tell checkpoints apart in practice.
    Independent of where the folder lives.
    """
    h = hashlib.sha256()
    chunk = 1 << 20
    parts = ["model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"]
    files: list[Path] = []
    for part in parts:
        p = folder / part
        files.extend(sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p])
    for f in files:
        if not f.is_file():
            continue
        size = f.stat().st_size
        h.update(f"{f.relative_to(folder).as_posix()}\0{size}\0".encode())
        with f.open("rb") as fh:
            if size <= 2 * chunk:
                h.update(fh.read())
            else:
                h.update(fh.read(chunk))
                fh.seek(size - chunk)
                h.update(fh.read(chunk))
    return h.hexdigest()


@dataclass
class SDSettings:
    """Everything that configures the backend, saved next to the learned embeddings."""

    sd_model: str
    device: str = "auto"
    dtype: str | None = None
    resolution: int | None = None
    inference_steps: int = GenerateConfig.inference_steps
    ti_steps: int = GenerateConfig.ti_steps
    ti_lr: float = TI_LR
    ti_batch_size: int = TI_BATCH_SIZE
    num_vectors: int = 1
    init_word: str = "object"
    seed: int = 0
    batch_size: int = 8
    attention_slicing: bool = False


def _to_unit(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 B×C×H×W -> float32 B×3×res×res in [0, 1] (the pipelines' tensor input range)."""
    x = images.float() / 255.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (resolution, resolution):
        x = F.interpolate(
            x, size=(resolution, resolution), mode="bicubic", antialias=True, align_corners=False
        )
    return x.clamp(0, 1).contiguous()


def _from_unit(x: torch.Tensor, size: tuple[int, int], channels: int) -> torch.Tensor:
    """float B×3×res×res in [0, 1] -> uint8 B×channels×H×W."""
    x = x.float().cpu()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
    if channels == 1:
        x = x.mean(1, keepdim=True)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _load_pipe(folder: Path, variant: str | None) -> Any:
    """The img2img pipeline of a local diffusers folder, as stored (no download).

    No dtype keyword at load: diffusers renamed `torch_dtype` to `dtype`, and only a
    private helper tells which one a version takes. The weights load as stored (fp32 or
    the fp16 variant's fp16) and the caller's `.to()` casts them, on every version alike.
    """
    from diffusers import StableDiffusionImg2ImgPipeline

    kwargs: dict[str, Any] = {"variant": variant} if variant else {}
    return StableDiffusionImg2ImgPipeline.from_pretrained(
        str(folder),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        local_files_only=True,
        **kwargs,
    )


def _negative(
    negative_weights: torch.Tensor | None,
    rows: slice,
    table: torch.Tensor,
    uncond: torch.Tensor,
    k: int,
) -> torch.Tensor:
    """The guidance's negative prompt embeddings of `rows`: the empty prompt, or the mix
    `negative_weights` asks for."""
    if negative_weights is None:
        return uncond.expand(rows.stop - rows.start, -1, -1)
    return mix_rows(negative_weights[rows].detach().float().to(table.device), table, k)


class StableDiffusionBackend:
    """DA-Fusion generator on a frozen Stable Diffusion 1.x (see the module docstring)."""

    name = "stable-diffusion"

    def __init__(self, pipe: Any, settings: SDSettings, *, model_folder: Path | None = None):
        self.pipe = pipe
        self.settings = settings
        self.model_folder = model_folder
        self.device = pipe.device
        self.dtype = pipe.unet.dtype
        self.resolution = int(settings.resolution or pipeline_resolution(pipe.vae, pipe.unet))
        self.class_names: list[str] = []
        self.class_tokens: list[str] = []
        self.embeddings: dict[str, torch.Tensor] = {}
        self.ti_losses: list[float] = []
        self.ti_stats: dict[str, float] = {}
        self._cond: torch.Tensor | None = None
        self._uncond: torch.Tensor | None = None
        self._inpaint: Any = None
        self._digest: str | None = None
        pipe.set_progress_bar_config(disable=True)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        sd_model: str,
        *,
        device: str = "auto",
        dtype: str | torch.dtype | None = None,
        ti_steps: int = GenerateConfig.ti_steps,
        ti_lr: float = TI_LR,
        ti_batch_size: int = TI_BATCH_SIZE,
        num_vectors: int = 1,
        init_word: str = "object",
        resolution: int | None = None,
        inference_steps: int = GenerateConfig.inference_steps,
        batch_size: int = 8,
        seed: int = 0,
        attention_slicing: bool = False,
    ) -> StableDiffusionBackend:
        """Load SD 1.x from a local diffusers folder (or cached hub id); no download.

        ``device="auto"`` picks CUDA when present. ``dtype=None``: float16 on CUDA, float32 on
        CPU. ``attention_slicing`` trades speed for memory on small GPUs; off by default:
        with PyTorch's SDPA attention it made SD 1.x img2img 2.6x slower on an H200 (fp16,
        512 px, batch 8) for the same peak memory (bench/bench_sd.py --full).
        ``ti_steps`` are textual-inversion steps (all classes in one loop); ``inference_steps``
        the length of the full denoising schedule, of which img2img runs the share ``strength``.
        """
        folder, variant = resolve_sd_model(sd_model)
        dev = resolve_device(device)
        torch_dtype = _resolve_dtype(dtype, dev)
        pipe = _load_pipe(folder, variant).to(dev, torch_dtype)
        slicing = bool(attention_slicing) and dev.type == "cuda"
        if slicing:
            pipe.enable_attention_slicing()
        settings = SDSettings(
            sd_model=str(sd_model),
            device=device,
            dtype=str(torch_dtype).removeprefix("torch."),
            resolution=resolution,
            inference_steps=inference_steps,
            ti_steps=ti_steps,
            ti_lr=ti_lr,
            ti_batch_size=ti_batch_size,
            num_vectors=num_vectors,
            init_word=init_word,
            seed=seed,
            batch_size=batch_size,
            attention_slicing=slicing,
        )
        return cls(pipe, settings, model_folder=folder)

    @classmethod
    def from_settings(
        cls, config: GenerateConfig, data: TrainingData, device: torch.device
    ) -> StableDiffusionBackend:
        """The frozen model the run's settings name (`sd_model`), with its textual-inversion
        settings; untrained tokens. ``data`` is unused: SD reads its own inputs."""
        del data
        return cls.from_pretrained(
            config.sd_model,
            device=str(device),
            ti_steps=config.ti_steps,
            num_vectors=config.ti_vectors,
            seed=config.generator_seed,
            inference_steps=config.inference_steps,
        )

    # ------------------------------------------------------------------ training
    def fit(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        class_names: list[str],
        *,
        progress: bool = True,
        masks: torch.Tensor | None = None,
    ) -> None:
        """Textual inversion: every class token in one loop of ``ti_steps`` steps. Give the
        images at :attr:`resolution` (they are resized otherwise) and, for an inpainting
        UNet, the masks the variants will be inpainted with."""
        s = self.settings
        result = train_textual_inversion(
            self.pipe,
            images,
            labels,
            list(class_names),
            init_word=s.init_word,
            num_vectors=s.num_vectors,
            steps=s.ti_steps,
            lr=s.ti_lr,
            batch_size=s.ti_batch_size,
            seed=s.seed,
            progress=progress,
            resolution=self.resolution,
            masks=masks,
        )
        self.class_names = list(class_names)
        self.class_tokens = result.class_tokens
        self.embeddings = result.embeddings
        self.ti_losses = result.losses
        self.ti_stats = {
            "ti/steps": float(len(result.losses)),
            "ti/micro_batches": float(result.micro_batches),
            "ti/seconds": result.seconds,
            "ti/steps_per_s": result.steps_per_s,
            "ti/encode_seconds": result.encode_seconds,
        }
        self._cond = self._uncond = None

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def _conditioning(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached prompt embeddings: K×L×D per class prompt and 1×L×D for the empty prompt."""
        if self._cond is None or self._uncond is None:
            prompts = [PROMPT_TEMPLATE.format(tok) for tok in self.class_tokens]
            # encode_prompt spells multi-vector tokens out (maybe_convert_prompt)
            cond, _ = self.pipe.encode_prompt(prompts, self.device, 1, False)
            uncond, _ = self.pipe.encode_prompt([""], self.device, 1, False)
            self._cond, self._uncond = cond.float(), uncond.float()
        return self._cond, self._uncond

    def _steps_for(self, strength: float) -> int:
        """Schedule length so that img2img runs at least one denoising step at ``strength``."""
        n = max(1, int(self.settings.inference_steps))
        if int(n * strength) < 1:
            n = math.ceil(1.0 / strength)
            while int(n * strength) < 1:
                n += 1
        return n

    def _inpaint_pipe(self) -> Any:
        if self._inpaint is None:
            from diffusers import StableDiffusionInpaintPipeline

            comps = {k: v for k, v in self.pipe.components.items()}
            self._inpaint = StableDiffusionInpaintPipeline(**comps, requires_safety_checker=False)
            self._inpaint.set_progress_bar_config(disable=True)
        return self._inpaint

    def img2img(
        self,
        images: torch.Tensor,
        class_weights: torch.Tensor,
        strength: float,
        *,
        guidance_scale: float,
        seeds: list[int],
        masks: torch.Tensor | None = None,
        negative_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """SDEdit variants of uint8 B×C×H×W images, conditioned on mixed class prompts.

        ``class_weights`` B×K rows (summing to 1; B×(K+1) with the empty prompt last) mix
        the class prompt embeddings (77×768 text-encoder states); a row with a negative
        weight (extrapolation) is rescaled token position by token position to the mean
        norm of the class prompts there (positions before the class token are the same in
        every prompt, so they stay unchanged). ``negative_weights`` (B×(K+1)) replace the
        empty prompt as the negative of classifier-free guidance. ``strength`` in (0, 1];
        one seed per image. With ``masks`` (B×1×H×W, nonzero = object) only the object
        region is regenerated (inpainting) and the rest is the original image.
        Returns uint8 B×C×H×W at the input size and channels.
        """
        if not self.class_tokens:
            raise RuntimeError("StableDiffusionBackend: call fit() or load() before img2img()")
        k = len(self.class_tokens)
        validate_img2img_inputs(images, class_weights, seeds, k, masks, negative_weights)
        strength = validate_strength(strength)
        if images.shape[1] not in (1, 3):
            raise ValueError(f"images must have 1 or 3 channels, got {images.shape[1]}")
        b, c, h, w = images.shape
        class_weights = class_weights.detach().float().cpu()
        if b == 0:
            return images.clone()

        cond, uncond = self._conditioning()
        table = torch.cat([cond, uncond])  # (K+1)×L×D, the empty prompt last
        inpaint_unet = self.pipe.unet.config.in_channels == 9
        if inpaint_unet and masks is None:
            masks = torch.ones(b, 1, h, w, dtype=torch.bool)
        steps = self._steps_for(float(strength))
        out = torch.empty_like(images)
        for start in range(0, b, max(1, self.settings.batch_size)):
            sl = slice(start, min(b, start + max(1, self.settings.batch_size)))
            mix = mix_rows(class_weights[sl].to(cond.device), table, k)
            negative = _negative(negative_weights, sl, table, uncond, k)
            kwargs: dict[str, Any] = {
                "image": _to_unit(images[sl], self.resolution),
                "prompt_embeds": mix.to(self.dtype),
                "negative_prompt_embeds": negative.to(self.dtype),
                "strength": float(strength),
                "num_inference_steps": steps,
                "guidance_scale": float(guidance_scale),
                "generator": [torch.Generator().manual_seed(int(s)) for s in seeds[sl]],
                "output_type": "pt",
            }
            out[sl] = self._run_pipe(kwargs, images[sl], None if masks is None else masks[sl])
        return out

    def _run_pipe(
        self, kwargs: dict[str, Any], images: torch.Tensor, masks: torch.Tensor | None
    ) -> torch.Tensor:
        """One batch through img2img, or through inpainting of the object region (the rest
        is the original image); uint8 at the input size and channels."""
        n, c, h, w = images.shape
        if masks is None:
            return _from_unit(self.pipe(**kwargs).images, (h, w), c)
        res = self.resolution
        obj = (masks.reshape(n, 1, h, w) != 0).float()
        m = F.interpolate(obj, size=(res, res), mode="bilinear", align_corners=False)
        gen = self._inpaint_pipe()(
            mask_image=(m > 0.5).float(), height=res, width=res, **kwargs
        ).images
        y = _from_unit(gen, (h, w), c)
        return torch.where(obj.bool().expand(-1, c, -1, -1), y, images)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path) -> None:
        """Write the learned embeddings (diffusers format) and ``stable_diffusion.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_embeddings(self.embeddings, directory / EMBEDDINGS_DIR, self.class_names)
        meta = {
            "backend": self.name,
            "format_version": _FORMAT_VERSION,
            "sd_model": self.settings.sd_model,
            "settings": dataclasses.asdict(self.settings),
            "class_names": self.class_names,
            "class_tokens": self.class_tokens,
            "ti_losses": self.ti_losses,
            "ti_stats": self.ti_stats,
            "fingerprint": self.fingerprint(),
        }
        (directory / SETTINGS_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(
        cls,
        directory: Path,
        *,
        sd_model: str | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        **overrides: Any,
    ) -> StableDiffusionBackend:
        """Restore a saved backend. ``sd_model`` replaces the saved path (weights moved);
        ``device``/``dtype`` default to auto; other keywords override saved settings."""
        directory = Path(directory)
        path = directory / SETTINGS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: not a saved StableDiffusionBackend")
        meta = json.loads(path.read_text())
        saved = dict(meta["settings"])
        saved.update(overrides)
        saved["sd_model"] = sd_model or meta["sd_model"]
        saved["device"] = device or "auto"
        saved["dtype"] = dtype
        backend = cls.from_pretrained(**saved)
        tokens = load_into(backend.pipe, directory / EMBEDDINGS_DIR)
        if tokens != list(meta["class_tokens"]):
            raise ValueError(f"{directory}: embeddings {tokens} do not match the saved classes")
        weight = backend.pipe.text_encoder.get_input_embeddings().weight
        nv = backend.settings.num_vectors
        tok = backend.pipe.tokenizer
        backend.embeddings = {}
        for t in tokens:
            names = [t] + [f"{t}_{i}" for i in range(1, nv)]
            ids = tok.convert_tokens_to_ids(names)
            backend.embeddings[t] = weight[ids].detach().float().cpu().clone()
        backend.class_names = list(meta["class_names"])
        backend.class_tokens = tokens
        backend.ti_losses = meta.get("ti_losses", [])
        backend.ti_stats = meta.get("ti_stats", {})
        return backend

    def fingerprint(self) -> str:
        """sha256 over the base weights' digest, output-relevant settings and learned tokens."""
        if self._digest is None:
            self._digest = model_digest(self.model_folder) if self.model_folder else "unknown"
        s = self.settings
        h = hashlib.sha256()
        head = {
            "backend": self.name,
            "format_version": _FORMAT_VERSION,
            "base_model": self._digest,
            "device_type": self.device.type,
            "dtype": str(self.dtype),
            "resolution": self.resolution,
            "inference_steps": s.inference_steps,
            "num_vectors": s.num_vectors,
            "class_names": self.class_names,
            "class_tokens": self.class_tokens,
        }
        h.update(json.dumps(head, sort_keys=True).encode())
        for tok in self.class_tokens:
            h.update(tok.encode())
            h.update(self.embeddings[tok].float().contiguous().numpy().tobytes())
        return h.hexdigest()


def _embeddings_source(spec: str) -> Path:
    """The folder `ti_embeddings` names: a run's generator/ artifact, or a local folder."""
    from eibacl import tracking

    if not spec.startswith("runs:/"):
        return Path(spec).expanduser()
    run_id = spec[len("runs:/") :].strip("/").split("/")[0]
    try:
        return tracking.download(run_id, "generator")
    except tracking.MlflowException as exc:  # only "no such run/artifact" is the user's
        if not tracking.is_not_found(exc):
            raise
        raise ValueError(
            f"ti_embeddings={spec!r}: cannot fetch the generator/ artifact of run {run_id} "
            f"({type(exc).__name__}): give the run id of a generate run that trained "
            "Stable Diffusion tokens"
        ) from exc


def reuse_embeddings(
    config: GenerateConfig, names: list[str], device: torch.device | str
) -> StableDiffusionBackend:
    """The SD backend with the class tokens of `ti_embeddings` (runs:/<run id> or a folder
    holding a saved generator), checked against this run's classes."""
    spec = config.ti_embeddings
    source = _embeddings_source(spec)
    if not (source / SETTINGS_FILE).is_file():
        raise ValueError(
            f"ti_embeddings={spec!r}: {source} holds no saved Stable Diffusion generator "
            f"({SETTINGS_FILE}): give runs:/<run id> of a generate run with "
            "generator=stable-diffusion, or its generator/ folder"
        )
    backend = StableDiffusionBackend.load(source, sd_model=config.sd_model, device=str(device))
    if backend.class_names != names:
        raise ValueError(
            f"ti_embeddings={spec!r} learned tokens for {backend.class_names}, but this run's "
            f"classes are {names}: reuse a run with the same in-distribution classes"
        )
    log.info("textual inversion: %d class tokens reused from %s", len(names), spec)
    backend.ti_stats = {}  # not trained in this run: its ti/* metrics stay with the source run
    return backend
