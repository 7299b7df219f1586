"""The embedded CPU-friendly generator: a small class-conditional pixel-space DDPM.

No diffusion weights can be downloaded here, so this backend trains its own diffusion model
on the real training split. Conditioning follows DA-Fusion's idea with a learned embedding
per class (row ``K`` of the table is the "null" class for classifier-free guidance). The
embedding vector is added to the UNet's timestep embedding (diffusers ``UNet2DModel`` with
``class_embed_type="identity"``, which takes a float B×D tensor as ``class_labels``), so a
row of class weights that mixes two classes conditions on the weighted sum of their
embeddings, the analogue of interpolating two textual-inversion tokens.

Sampling is SDEdit: the input is noised to the timestep given by ``strength`` and denoised
with DDIM (deterministic, eta = 0) under classifier-free guidance. Each image's noise comes
from its own seeded generator, so its output does not depend on the rest of the batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from eibacl.device import autocast
from eibacl.generate.backends.protocol import mix_rows, validate_img2img_inputs, validate_strength

if TYPE_CHECKING:
    from eibacl.config import GenerateConfig
    from eibacl.data.training_data import TrainingData

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_FORMAT_VERSION = 1


@dataclass
class DDPMConfig:
    """Everything that defines the model and how it was trained and samples.

    Defaults are the CPU defaults: a ~1.5M-parameter UNet at 32×32 that trains on 700
    images in about five minutes on two cores (see ``bench/bench_ddpm.py``).
    """

    image_size: int = 32
    channels: int = 1
    num_classes: int = 1
    class_names: list[str] = field(default_factory=list)
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 2
    attention: bool = True  # self-attention at the lowest resolution only (cheap there)
    norm_num_groups: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    cond_dropout: float = 0.1
    train_steps: int = 300
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 30
    ema_decay: float = 0.99
    hflip: bool = True
    max_minutes: float | None = None
    seed: int = 0
    inference_steps: int = 25
    sample_batch_size: int | None = None  # images per forward; None: 32 on CPU, 512 on CUDA

    def validate(self) -> None:
        if self.image_size < 8 or self.image_size % (2 ** (len(self.block_out_channels) - 1)):
            raise ValueError(
                f"image_size {self.image_size} must be >= 8 and divisible by "
                f"{2 ** (len(self.block_out_channels) - 1)} (one halving per UNet level)"
            )
        if self.channels < 1 or self.num_classes < 1:
            raise ValueError("channels and num_classes must be >= 1")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(
                f"block_out_channels {self.block_out_channels} must be multiples of "
                f"norm_num_groups={self.norm_num_groups}"
            )
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if self.train_steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("train_steps must be >= 0, batch_size >= 1 and lr > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.inference_steps < 1 or (self.sample_batch_size or 1) < 1:
            raise ValueError("inference_steps and sample_batch_size must be >= 1")

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["block_out_channels"] = list(self.block_out_channels)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DDPMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown DDPM config keys {sorted(unknown)}")
        data = dict(data)
        if "block_out_channels" in data:
            data["block_out_channels"] = tuple(data["block_out_channels"])
        return cls(**data)


class _ConditionalUNet(nn.Module):
    """``UNet2DModel`` plus our class-embedding table (row ``num_classes`` = null class)."""

    def __init__(self, cfg: DDPMConfig):
        super().__init__()
        from diffusers import UNet2DModel

        levels = len(cfg.block_out_channels)
        down = ["DownBlock2D"] * levels
        up = ["UpBlock2D"] * levels
        if cfg.attention:
            down[-1] = "AttnDownBlock2D"
            up[0] = "AttnUpBlock2D"
        self.unet = UNet2DModel(
            sample_size=cfg.image_size,
            in_channels=cfg.channels,
            out_channels=cfg.channels,
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            norm_num_groups=cfg.norm_num_groups,
            attention_head_dim=8,
            class_embed_type="identity",
        )
        embed_dim = cfg.block_out_channels[0] * 4  # UNet2DModel's time_embed_dim
        self.class_embedding = nn.Embedding(cfg.num_classes + 1, embed_dim)
        self.null_index = cfg.num_classes

    def embed(self, class_weights: torch.Tensor) -> torch.Tensor:
        """Mix the embedding rows by ``class_weights`` (B×K, or B×(K+1) with the null last)
        into B×D vectors; extrapolations are rescaled to the class rows' mean norm."""
        return mix_rows(class_weights, self.class_embedding.weight, self.null_index)

    def null(self, batch: int) -> torch.Tensor:
        return self.class_embedding.weight[self.null_index].expand(batch, -1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, class_labels=emb).sample


def _make_schedulers(cfg: DDPMConfig) -> tuple[Any, Any]:
    from diffusers import DDIMScheduler, DDPMScheduler

    common = dict(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type="epsilon",
        clip_sample=True,
    )
    train = DDPMScheduler(**common)
    # "trailing" spacing starts the full schedule at t = T-1, so strength 1.0 is pure noise.
    sample = DDIMScheduler(
        **common, set_alpha_to_one=True, timestep_spacing="trailing", steps_offset=0
    )
    return train, sample


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1.0


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


class DDPMBackend:
    """Class-conditional pixel DDPM trained on the real split; SDEdit img2img with CFG."""

    name = "ddpm"

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 1,
        num_classes: int = 1,
        *,
        device: str | torch.device = "cpu",
        **hyper: Any,
    ):
        """Build an untrained model. ``hyper`` are `DDPMConfig` fields (train_steps, lr, ...)."""
        self.config = DDPMConfig(
            image_size=image_size, channels=channels, num_classes=num_classes, **hyper
        )
        self.config.validate()
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self.model = _ConditionalUNet(self.config)
        self.model.to(self.device).eval()
        self.trained_steps = 0
        self.loss_history: list[float] = []
        self.train_seconds = 0.0

    @classmethod
    def from_settings(
        cls,
        config: GenerateConfig,
        data: TrainingData,
        device: torch.device,
        *,
        train_steps: int | None = None,
    ) -> DDPMBackend:
        """The untrained model the run's settings describe, at its work size
        (`generator_size`); ``train_steps`` replaces `generator_steps` (the time probe)."""
        from eibacl.generate.backends import work_size

        return cls(
            image_size=work_size(config, data),
            channels=data.imageset.channels,
            num_classes=data.num_classes,
            device=device,
            train_steps=config.generator_steps if train_steps is None else train_steps,
            inference_steps=config.inference_steps,
            seed=config.generator_seed,
        )

    # ------------------------------------------------------------------ helpers
    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def _check_images(self, images: torch.Tensor) -> None:
        c, s = self.config.channels, self.config.image_size
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (c, s, s):
            raise ValueError(
                f"images must be uint8 N×{c}×{s}×{s} for this model, got {images.dtype} "
                f"{tuple(images.shape)}; resize them or build the backend with "
                f"image_size={images.shape[-1]}, channels={images.shape[1]}"
            )

    # ------------------------------------------------------------------ training
    def fit(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        class_names: list[str],
        *,
        progress: bool = True,
        checkpoint: Path | None = None,
        checkpoint_every: int = 100,
    ) -> None:
        """Train the UNet and class embeddings with the epsilon-prediction MSE loss.

        Stops after ``train_steps`` or ``max_minutes``, whichever comes first; the cosine
        learning-rate decay follows whichever budget is further spent, so a time-limited run
        still ends at a low rate. The saved/sampling weights are the EMA weights. With
        ``checkpoint`` the loop resumes from (and keeps writing) that file
        (`eibacl.generate.backends.ddpm_training`).
        """
        cfg = self.config
        self._check_images(images)
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},)")
        if len(class_names) != cfg.num_classes:
            raise ValueError(
                f"got {len(class_names)} class names for a model of {cfg.num_classes} classes"
            )
        if images.shape[0] == 0:
            raise ValueError("no training images")
        if labels.min() < 0 or labels.max() >= cfg.num_classes:
            raise ValueError(f"labels must be in [0, {cfg.num_classes})")
        cfg.class_names = list(class_names)

        from eibacl.generate.backends.ddpm_training import train_denoiser

        state = train_denoiser(
            self,
            _to_unit(images).to(self.device),
            labels.to(self.device),
            progress=progress,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
        )
        self.loss_history = list(state.losses)
        self.trained_steps = len(self.loss_history)
        self.train_seconds = state.seconds

    # ------------------------------------------------------------------ sampling
    def _noise(self, seeds: list[int]) -> torch.Tensor:
        c, s = self.config.channels, self.config.image_size
        out = torch.empty(len(seeds), c, s, s)
        for i, seed in enumerate(seeds):
            g = torch.Generator(device="cpu").manual_seed(int(seed))
            out[i] = torch.randn(c, s, s, generator=g)
        return out

    @torch.no_grad()
    def img2img(
        self,
        images: torch.Tensor,
        class_weights: torch.Tensor,
        strength: float,
        *,
        guidance_scale: float,
        seeds: list[int],
        masks: torch.Tensor | None = None,
        progress: bool = False,
        negative_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """SDEdit: noise ``images`` to ``strength`` and denoise under class guidance.

        Runs ``round(strength * inference_steps)`` of the ``inference_steps`` DDIM steps
        (at least one). With ``masks`` (B×1×H×W, 1 = object), only the object region is
        regenerated and the rest is kept from the input (RePaint-style blending).
        ``negative_weights`` (B×(K+1), null last) replace the null as the guidance's
        negative (see `eibacl.generate.backends.protocol`).
        """
        cfg = self.config
        strength = validate_strength(strength)
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        self._check_images(images)
        validate_img2img_inputs(
            images, class_weights, list(seeds), cfg.num_classes, masks, negative_weights
        )
        out = torch.empty_like(images)
        chunk = cfg.sample_batch_size or (512 if self.device.type == "cuda" else 32)
        bar = tqdm(total=images.shape[0], desc="ddpm img2img", disable=not progress, leave=False)
        for lo in range(0, images.shape[0], chunk):
            hi = min(lo + chunk, images.shape[0])
            part_masks = None if masks is None else masks[lo:hi]
            out[lo:hi] = self._img2img_chunk(
                images[lo:hi],
                class_weights[lo:hi],
                strength,
                guidance_scale,
                list(seeds[lo:hi]),
                part_masks,
                None if negative_weights is None else negative_weights[lo:hi],
            )
            bar.update(hi - lo)
        bar.close()
        return out

    def _img2img_chunk(
        self,
        images: torch.Tensor,
        class_weights: torch.Tensor,
        strength: float,
        guidance_scale: float,
        seeds: list[int],
        masks: torch.Tensor | None,
        negative_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cfg = self.config
        _, sched = _make_schedulers(cfg)
        sched.set_timesteps(cfg.inference_steps)
        run = min(max(int(round(strength * cfg.inference_steps)), 1), cfg.inference_steps)
        timesteps = sched.timesteps[cfg.inference_steps - run :]
        ab_all = sched.alphas_cumprod.to(self.device)

        b = images.shape[0]
        x0 = _to_unit(images).to(self.device)
        eps = self._noise(seeds).to(self.device)
        ab = ab_all[timesteps[0]]
        x = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        keep = None
        if masks is not None:
            keep = 1.0 - (masks.to(self.device).float() > 0.5).float()

        cond = self.model.embed(class_weights.to(self.device).float())
        if negative_weights is None:
            negative = self.model.null(b)
        else:
            negative = self.model.embed(negative_weights.to(self.device).float())
        use_cfg = guidance_scale != 1.0
        emb = torch.cat([cond, negative]) if use_cfg else cond
        for i, t in enumerate(timesteps):
            model_in = torch.cat([x, x]) if use_cfg else x
            t_batch = torch.full((model_in.shape[0],), int(t), device=self.device)
            with autocast(self.device):
                pred = self.model(model_in, t_batch, emb).float()
            if use_cfg:
                pred_c, pred_u = pred.chunk(2)
                pred = pred_u + guidance_scale * (pred_c - pred_u)
            x = sched.step(pred, int(t), x).prev_sample
            if keep is not None:
                # Put the source back outside the object, noised to the next level with the
                # same noise: consistent with the deterministic DDIM trajectory.
                if i + 1 < len(timesteps):
                    ab_next = ab_all[timesteps[i + 1]]
                    src = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
                else:
                    src = x0
                x = keep * src + (1 - keep) * x
        return _to_uint8(x).cpu()

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, torch.Tensor]:
        return {
            k: v.detach().float().cpu().contiguous() for k, v in self.model.state_dict().items()
        }

    def _meta(self) -> dict[str, Any]:
        config = self.config.to_json()
        config.pop("sample_batch_size")  # how outputs are batched does not change them
        return {
            "backend": self.name,
            "format_version": _FORMAT_VERSION,
            "config": config,
            "trained_steps": self.trained_steps,
        }

    def save(self, directory: Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = self._meta()
        meta["config"] = self.config.to_json()
        meta["fingerprint"] = self.fingerprint()
        meta["loss_history"] = self.loss_history
        meta["train_seconds"] = self.train_seconds
        save_file(self._state(), str(directory / WEIGHTS_FILE))
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path, **kwargs: Any) -> DDPMBackend:
        """Restore a saved backend; ``device=`` and sampling settings may be overridden."""
        from safetensors.torch import load_file

        directory = Path(directory)
        path = directory / CONFIG_FILE
        if not path.is_file() or not (directory / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(
                f"{directory} holds no saved ddpm generator ({CONFIG_FILE} + {WEIGHTS_FILE})"
            )
        meta = json.loads(path.read_text())
        if meta.get("backend") != cls.name:
            raise ValueError(f"{directory} holds a {meta.get('backend')!r} backend, not 'ddpm'")
        device = kwargs.pop("device", "cpu")
        data = dict(meta["config"])
        data.update(kwargs)
        cfg = DDPMConfig.from_json(data)
        hyper = {
            k: v
            for k, v in dataclasses.asdict(cfg).items()
            if k not in ("image_size", "channels", "num_classes")
        }
        backend = cls(cfg.image_size, cfg.channels, cfg.num_classes, device=device, **hyper)
        backend.model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        backend.model.eval()
        backend.trained_steps = int(meta.get("trained_steps", 0))
        backend.loss_history = list(meta.get("loss_history", []))
        backend.train_seconds = float(meta.get("train_seconds", 0.0))
        return backend

    def fingerprint(self) -> str:
        """sha256 over the config (incl. sampling settings) and the sampling weights."""
        h = hashlib.sha256()
        h.update(json.dumps(self._meta(), sort_keys=True).encode())
        for key, tensor in sorted(self._state().items()):
            h.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            h.update(tensor.numpy().tobytes())
        return h.hexdigest()
