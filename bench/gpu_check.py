"""One prepared GPU check of the researcher's path (issue 18): Stable Diffusion on photos with
masks, then a resnet50 SupCon pretrain at 224 px. Fits in 8 minutes on one H100.

    python bench/gpu_check.py           # CUDA: random full-size SD 1.x at 512 px (see below)
    python bench/gpu_check.py --tiny    # CPU, tiny sizes: checks that every stage runs
    bash bench/gpu_check.sh             # the same, its output also in $OUT (or /tmp)

Nothing is downloaded: SD 1.x is built from configs with random weights (timings do not
depend on the weights; bench/bench_sd.py does the same), in memory. Stages, each timed:

  data      a folder of 22 classes x 5 objects x 4 views (640 x 480 photos with mask files;
            20 classes in distribution, 1 near-OOD, 1 validation-OOD), decoded at image_size
            and, for the generator, the training crops again at 512 px with their masks
  ti        textual inversion of the 20 class tokens in one loop (--ti-steps; the time of
            DA-Fusion's 1000 steps is projected from it)
  img2img   one variant per training image at strength 0.5 (--inference-steps), resized to
            image_size and written as PNG, like `generate`
  inpaint   the same inpainting the mask regions, on a 9-channel (inpainting) UNet
  pretrain  SupCon on resnet50 at 224 px (--epochs, default 20 over the 240 training
            images), through the pretrain entry point

Each stage prints images/s (steps/s for ti), its seconds and the peak GPU memory; the end
prints where the time went. MLflow runs and caches go to a temporary folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS: list[tuple[str, float, str, float]] = []  # stage, seconds, rate, peak GiB


def _module(path: str, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def stage(name: str, device: torch.device, fn: Callable[[], tuple[float, str]]) -> Any:
    """Run one stage; `fn` returns (count, unit) for the rate. Prints one line."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    count, unit, *value = fn()
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    rate = f"{count / seconds:.2f} {unit}/s" if count else unit
    RESULTS.append((name, seconds, rate, peak))
    gpu = f", peak GPU memory {peak:.1f} GiB" if device.type == "cuda" else ""
    done = f"{count:g} in {seconds:.1f} s" if count else f"{seconds:.1f} s"
    print(f"[{name}] {rate} ({done}{gpu})", flush=True)
    return value[0] if value else None


def build_folder(root: Path, classes: int, objects: int, views: int, w: int, h: int) -> Path:
    """Photos of textured objects on a textured background, part of each object black, and
    a mask file per photo."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        for o in range(objects):
            for v in range(views):
                image = rng.integers(40, 90, (h, w, 3)).astype(np.uint8)
                top, left = rng.integers(0, h // 4), rng.integers(0, w // 4)
                bottom, right = top + h // 2, left + w // 2
                image[top:bottom, left:right] = rng.integers(100, 255, 3) + rng.integers(
                    0, 30, (bottom - top, right - left, 3)
                )
                image[top:bottom, left : left + w // 8] = 0
                mask = np.zeros((h, w), np.uint8)
                mask[top:bottom, left:right] = 255
                rel = Path(f"c{c:02d}/obj{o}/v{v}.png")
                for base, array in ((root, image), (root / "masks", mask)):
                    (base / rel).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(array).save(base / rel)
    return root


def sd_pipelines(tiny: bool, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """(img2img pipeline with a 4-channel UNet, the same with a 9-channel inpainting UNet)."""
    from diffusers import StableDiffusionImg2ImgPipeline, UNet2DConditionModel

    if tiny:
        tiny_sd = _module("tests/generate/tiny_sd.py", "tiny_sd")
        plain = StableDiffusionImg2ImgPipeline(**tiny_sd.build_tiny_sd_components(0))
        nine = tiny_sd.build_tiny_sd_components(0, inpaint_unet=True)["unet"]
    else:
        plain = _module("bench/bench_sd.py", "bench_sd")._full_pipeline(device, dtype)
        torch.manual_seed(1)
        with torch.device(device):
            nine = UNet2DConditionModel(
                sample_size=64,
                in_channels=9,
                cross_attention_dim=768,
                block_out_channels=(320, 640, 1280, 1280),
                attention_head_dim=8,
            )
    components = {k: v for k, v in plain.components.items()}
    inpaint = StableDiffusionImg2ImgPipeline(**(components | {"unet": nine}))
    return plain.to(device, dtype), inpaint.to(device, dtype)


def sd_backend(pipe: Any, args: argparse.Namespace, device: torch.device) -> Any:
    from eibacl.generate.backends.stable_diffusion import SDSettings, StableDiffusionBackend

    settings = SDSettings(
        sd_model="<random SD 1.x config>",
        device=str(device),
        dtype=str(pipe.unet.dtype).removeprefix("torch."),
        inference_steps=args.inference_steps,
        ti_steps=args.ti_steps,
        batch_size=args.batch,
    )
    return StableDiffusionBackend(pipe, settings)


def variants(backend: Any, data: Any, inputs: Any, out: Path, masks: Any) -> tuple:
    """One variant per training image at strength 0.5, as `generate` makes them; the share of
    the time spent in the diffusion model itself is measured by wrapping `img2img`."""
    from eibacl.generate.dafusion.augment import generate_synthetic_set

    spent = [0.0]
    inner = backend.img2img

    def timed(*a: Any, **kw: Any) -> torch.Tensor:
        start = time.perf_counter()
        result = inner(*a, **kw)
        spent[0] += time.perf_counter() - start
        return result

    backend.img2img = timed
    generate_synthetic_set(
        backend,
        inputs.images,
        data.train_y,
        data.split.train,
        list(data.split.id_classes),
        num_synthetic=1,
        strengths=[0.5],
        num_near_ood=0,
        near_ood_recipes=[],
        guidance_scale=7.5,
        seed=0,
        out_dir=out,
        progress=False,
        masks=masks,
        output_size=data.imageset.image_size,
    )
    backend.img2img = inner
    n = len(data.split.train)
    return n, "images", spent[0]


def pretrain_stage(args: argparse.Namespace, common: dict[str, Any]) -> tuple:
    from eibacl.config import PretrainConfig
    from eibacl.train.pretrain import pretrain

    try:
        config = PretrainConfig(
            **common,
            encoder="resnet50",
            image_size=args.pretrain_size,
            synthetic="none",
            epochs=args.epochs,
            batch_size=args.pretrain_batch,
            warmup_epochs=0,
            eval_every=0,
        )
    except ValueError as exc:
        return 0, f"skipped: encoder resnet50 unavailable ({exc})", ""
    result = pretrain(config)
    per_s = result.metrics.get("train/images_per_s", 0.0)
    seen = len(result.data.train_x) * args.epochs
    return seen, "images", f"the training loop alone: {per_s:.1f} images/s (2 views each)"


def prepare(args: argparse.Namespace, device: torch.device) -> tuple[Any, Any, dict, Path]:
    """The photo folder, its split, and the generator's inputs (the `data` stage)."""
    from eibacl.config import GenerateRunConfig
    from eibacl.data.training_data import prepare_data
    from eibacl.generate.dafusion.generator_inputs import load_generator_inputs

    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    os.chdir(work)
    k = args.classes
    c = dict(classes=k + 2, objects=5, views=4, w=640, h=480)
    if args.tiny:
        c |= dict(objects=3, views=2, w=48, h=40)
    root = build_folder(work / "parts", **c)
    common = dict(
        data=f"folder:{root}",
        ood_classes=f"c{k:02d}",
        ood_val_classes=f"c{k + 1:02d}",
        shots=(c["objects"] - 2) * c["views"],  # one object to test, one to validation
        val_per_class=1,
        device=str(device),
        progress=False,
    )
    config = GenerateRunConfig(**common, image_size=args.image_size)
    size = 32 if args.tiny else 512

    def data_stage() -> tuple:
        data = prepare_data(config)
        inputs = load_generator_inputs(data, size, use_masks=True, mask_dilation=8)
        return len(data.train_ids), "images", (data, inputs)

    data, inputs = stage("data", device, data_stage)
    print(f"  {inputs.describe(data.imageset.image_size)}")
    return data, inputs, common, work


def sd_stages(args: argparse.Namespace, device: torch.device, data: Any, inputs: Any, work: Path):
    """Textual inversion, img2img and inpainting on random full-size (or tiny) SD 1.x."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipes = stage(
        "build",
        device,
        lambda: (0, "SD 1.x pipelines from configs", sd_pipelines(args.tiny, device, dtype)),
    )
    pipes = dict(zip(("plain", "inpaint"), pipes))
    plain = sd_backend(pipes.pop("plain"), args, device)
    names = list(data.split.id_classes)

    def ti() -> tuple:
        plain.fit(inputs.images, data.train_y, names, progress=False)
        return len(plain.ti_losses), "steps", dict(plain.ti_stats)

    stats = stage("ti", device, ti)
    per_step = stats["ti/seconds"] / max(1.0, stats["ti/steps"])
    projected = (1000 * per_step + stats["ti/encode_seconds"]) / 60
    print(
        f"  {len(names)} class tokens, {stats['ti/micro_batches']:g} micro-batches of "
        f"{plain.settings.ti_batch_size}; latents encoded once in "
        f"{stats['ti/encode_seconds']:.1f} s; DA-Fusion's 1000 steps: {projected:.1f} min"
    )
    spent = stage("img2img", device, lambda: variants(plain, data, inputs, work / "v", None))
    print(f"  of which the diffusion model: {spent:.1f} s")
    nine = sd_backend(pipes.pop("inpaint"), args, device)
    nine.class_names, nine.class_tokens = plain.class_names, plain.class_tokens
    nine.embeddings = plain.embeddings
    plain.pipe = None  # free the 4-channel UNet before the 9-channel one runs
    spent = stage("inpaint", device, lambda: variants(nine, data, inputs, work / "i", inputs.masks))
    print(f"  of which the diffusion model: {spent:.1f} s")


def run(args: argparse.Namespace) -> None:
    from eibacl.device import resolve_device

    device = resolve_device("cpu" if args.tiny else args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    sizes = "tiny" if args.tiny else "full"
    print(f"gpu_check: torch {torch.__version__} on {name}; {sizes} sizes", flush=True)
    data, inputs, common, work = prepare(args, device)
    sd_stages(args, device, data, inputs, work)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    note = stage("pretrain", device, lambda: pretrain_stage(args, common))
    if note:
        print(f"  {note}")


def summary(total: float) -> None:
    print(f"\nwhere the time went ({total:.0f} s in all):")
    for name, seconds, rate, peak in RESULTS:
        gpu = f", peak {peak:.1f} GiB" if peak else ""
        print(f"  {name:9s} {seconds:7.1f} s ({100 * seconds / total:4.1f} %)  {rate}{gpu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny sizes (a crash check)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--classes", type=int, default=20, help="in-distribution classes")
    parser.add_argument("--ti-steps", type=int, default=60, help="timed TI steps (one loop)")
    parser.add_argument("--inference-steps", type=int, default=25, help="full schedule")
    parser.add_argument("--batch", type=int, default=8, help="images per SD call")
    parser.add_argument("--image-size", type=int, default=224, help="the encoder's side")
    parser.add_argument("--pretrain-size", type=int, default=224)
    parser.add_argument("--pretrain-batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=20, help="pretrain epochs (240 images)")
    args = parser.parse_args()
    if args.tiny:
        args.classes, args.ti_steps, args.inference_steps, args.batch = 3, 2, 2, 4
        args.image_size, args.pretrain_size, args.pretrain_batch, args.epochs = 16, 32, 8, 1
    os.environ.setdefault("EIBACL_CACHE", tempfile.mkdtemp(prefix="gpu-check-cache-"))
    tracking_dir = Path(tempfile.mkdtemp(prefix="gpu-check-mlflow-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tracking_dir}/mlflow.db")
    start = time.perf_counter()
    run(args)
    summary(time.perf_counter() - start)


if __name__ == "__main__":
    main()
