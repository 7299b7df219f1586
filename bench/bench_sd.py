"""Throughput of the Stable Diffusion backend (img2img images/s, textual-inversion steps/s).

    python bench/bench_sd.py           # tiny random pipeline (32 px) on the CPU
    python bench/bench_sd.py --full    # random SD 1.x-size models at 512 px, CUDA fp16 if present

Nothing is downloaded: the models are randomly initialised from configs (timings do not depend
on the weights). The default run goes through the real ``from_pretrained`` path on a saved tiny
pipeline; ``--full`` wraps an in-memory pipeline (saving 3 GB of random weights would only
measure the disk). With ``--full`` on CUDA both attention-slicing settings are timed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eibacl.generate.backends.stable_diffusion import SDSettings, StableDiffusionBackend  # noqa: E402


def _tiny_sd():
    spec = importlib.util.spec_from_file_location("tiny_sd", ROOT / "tests/generate/tiny_sd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _full_pipeline(device: torch.device, dtype: torch.dtype, in_channels: int = 4):
    """SD 1.5-size UNet (860M) + VAE (84M) + a 768-wide 12-layer CLIP text encoder, random.
    ``in_channels=9``: the UNet of an inpainting checkpoint."""
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _tiny_sd().tiny_clip_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(  # the SD 1.x UNet config (block widths 320-1280)
            sample_size=64,
            in_channels=in_channels,
            cross_attention_dim=768,
            block_out_channels=(320, 640, 1280, 1280),
            attention_head_dim=8,
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=2,
            sample_size=512,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                hidden_size=768,
                intermediate_size=3072,
                num_attention_heads=12,
                num_hidden_layers=12,
                max_position_embeddings=77,
                projection_dim=768,
                hidden_act="quick_gelu",
            )
        )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
    )
    pipe = StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return pipe.to(device=device, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_img2img(backend, batch, size, channels, strength, guidance, repeats, device, masks):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, channels, size, size), generator=g, dtype=torch.uint8)
    k = len(backend.class_tokens)
    weights = torch.zeros(batch, k)
    weights[torch.arange(batch), torch.arange(batch) % k] = 1.0
    mask = None
    if masks:
        mask = torch.zeros(batch, 1, size, size, dtype=torch.bool)
        mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = True
    seeds = list(range(batch))
    backend.img2img(images, weights, strength, guidance_scale=guidance, seeds=seeds, masks=mask)
    _sync(device)
    start = time.perf_counter()
    for r in range(repeats):
        seeds = [r * batch + i for i in range(batch)]
        backend.img2img(images, weights, strength, guidance_scale=guidance, seeds=seeds, masks=mask)
    _sync(device)
    return batch * repeats / (time.perf_counter() - start)


def _time_ti(backend, size, channels, steps, device):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (8, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(8) % 2
    backend.settings.ti_steps = 1
    backend.fit(images, labels, ["a", "b"], progress=False)  # warm-up
    backend.settings.ti_steps = steps
    _sync(device)
    start = time.perf_counter()
    backend.fit(images, labels, ["a", "b"], progress=False)
    _sync(device)
    return steps / (time.perf_counter() - start)  # one loop over both class tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="SD 1.x size at 512 px (GPU)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--batch", type=int, default=None, help="images per img2img call")
    parser.add_argument("--steps", type=int, default=25, help="full-schedule inference steps")
    parser.add_argument("--strength", type=float, default=0.75)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ti-steps", type=int, default=None, help="timed TI steps (one loop)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    print(f"torch {torch.__version__}, device {device}", end="")
    if device.type == "cuda":
        print(f" ({torch.cuda.get_device_name(device)})", end="")
    print(f", threads {torch.get_num_threads()}")

    if not args.full:
        tmp = tempfile.TemporaryDirectory()
        folder = _tiny_sd().build_tiny_sd(Path(tmp.name) / "sd")
        backend = StableDiffusionBackend.from_pretrained(
            str(folder), device=str(device), inference_steps=args.steps, ti_steps=0
        )
        batch, size, channels = args.batch or 16, 28, 1
        slicing_options = [backend.settings.attention_slicing]
        ti_steps = args.ti_steps or 10
    else:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        if device.type != "cuda":
            print("note: no CUDA; the full-size run on a CPU takes minutes per image")
        t0 = time.perf_counter()
        pipe = _full_pipeline(device, dtype)
        print(f"built random SD 1.x pipeline in {time.perf_counter() - t0:.1f} s ({dtype})")
        settings = SDSettings(
            sd_model="<random SD 1.x config>",
            device=str(device),
            dtype=str(dtype).removeprefix("torch."),
            inference_steps=args.steps,
            ti_steps=0,
            batch_size=args.batch or 8,
        )
        backend = StableDiffusionBackend(pipe, settings)
        batch, size, channels = args.batch or 8, 512, 3
        slicing_options = [False, True] if device.type == "cuda" else [False]
        ti_steps = args.ti_steps or 20
    backend.settings.batch_size = batch
    backend.fit(
        torch.zeros(2, channels, size, size, dtype=torch.uint8),
        torch.tensor([0, 1]),
        ["a", "b"],
        progress=False,
    )  # tokens at their init embedding, no training

    run = args.strength
    denoise = int(backend._steps_for(run) * run)
    print(
        f"img2img: {batch} images/call at {backend.resolution} px, strength {run} "
        f"({denoise} of {args.steps} steps), guidance {args.guidance}"
    )
    for slicing in slicing_options:
        if device.type == "cuda":
            if slicing:
                backend.pipe.enable_attention_slicing()
            else:
                backend.pipe.disable_attention_slicing()
            torch.cuda.reset_peak_memory_stats(device)
        for masks in (False, True):
            ips = _time_img2img(
                backend, batch, size, channels, run, args.guidance, args.repeats, device, masks
            )
            line = f"  {'inpaint' if masks else 'img2img'} slicing={slicing}: {ips:.2f} images/s"
            if device.type == "cuda":
                line += (
                    f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
                )
            print(line, flush=True)
    if device.type == "cuda":
        backend.pipe.disable_attention_slicing()
        torch.cuda.reset_peak_memory_stats(device)
    sps = _time_ti(backend, size, channels, ti_steps, device)
    line = f"textual inversion (batch {backend.settings.ti_batch_size}): {sps:.2f} steps/s"
    if device.type == "cuda":
        line += f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    print(line)


if __name__ == "__main__":
    main()
