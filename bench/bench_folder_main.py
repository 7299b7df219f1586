"""The main job on an EIBA-like folder (RGB multi-view photos with masks), end to end.

    python bench/bench_folder_main.py --mode ddpm-cpu   # 10 classes x 36 images, 64 px, ddpm
    python bench/bench_folder_main.py --mode sd-tiny    # tiny random SD pipeline, 32 px (CPU)
    python bench/bench_folder_main.py --mode sd-full    # SD 1.x-size random pipeline, GPU

The folder is made here: 10 part classes x 12 objects x 3 views (128 x 96 JPEGs, masks),
3 classes held out. `ddpm-cpu` is the issue's CPU target (the embedded generator at
generator_size=32, variants at 64 px; wants <= 20 min on 2 cores). `sd-full` saves a
randomly initialised SD 1.5-size pipeline (~2 GB, fp16) and runs textual inversion,
inpainting of the object region, the judge, SupCon pretraining of an ImageNet-initialised
resnet18 at 128 px (weights: torchvision's cache; a random stand-in is saved there when
it is missing, so the timing is right offline), probe and baseline. Timings do not depend
on the weights. Prints each step's wall time and the headline figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = ("disc", "ring", "square", "frame", "triangle", "cross", "bar", "ellipse", "hex", "l")


def make_folder(root: Path, objects: int = 12, views: int = 3) -> Path:
    """Coloured part silhouettes on a noisy grey bench, one mask per image."""
    rng = np.random.default_rng(0)
    for c, shape in enumerate(SHAPES):
        for o in range(objects):
            hue = tuple(int(h) for h in rng.integers(40, 255, 3))
            scale = rng.uniform(0.6, 1.0)
            for v in range(views):
                image = Image.fromarray(rng.integers(90, 140, (96, 128, 3)).astype(np.uint8))
                mask = Image.new("L", (128, 96), 0)
                cx, cy = 64 + int(rng.integers(-12, 13)), 48 + int(rng.integers(-8, 9))
                r = int(32 * scale * rng.uniform(0.85, 1.15))
                for draw, fill in ((ImageDraw.Draw(image), hue), (ImageDraw.Draw(mask), 255)):
                    _draw(draw, c, cx, cy, r, fill)
                path = root / f"Teil {shape} grün" / f"obj{o:02d}" / f"view{v}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path, quality=90)
                mpath = root / "masks" / path.relative_to(root).with_suffix(".png")
                mpath.parent.mkdir(parents=True, exist_ok=True)
                mask.save(mpath)
    return root


def _draw(d: ImageDraw.ImageDraw, c: int, cx: int, cy: int, r: int, fill) -> None:
    box = [cx - r, cy - r, cx + r, cy + r]
    kind = SHAPES[c]
    if kind in ("disc", "ring"):
        d.ellipse(box, fill=fill if kind == "disc" else None, outline=fill, width=6)
    elif kind in ("square", "frame"):
        d.rectangle(box, fill=fill if kind == "square" else None, outline=fill, width=6)
    elif kind == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    elif kind == "cross":
        d.rectangle([cx - r, cy - 5, cx + r, cy + 5], fill=fill)
        d.rectangle([cx - 5, cy - r, cx + 5, cy + r], fill=fill)
    elif kind == "bar":
        d.rectangle([cx - r, cy - 7, cx + r, cy + 7], fill=fill)
    elif kind == "ellipse":
        d.ellipse([cx - r, cy - r // 2, cx + r, cy + r // 2], fill=fill)
    elif kind == "hex":
        d.regular_polygon((cx, cy, r), 6, fill=fill)
    else:
        d.rectangle([cx - r, cy - r, cx - r + 12, cy + r], fill=fill)
        d.rectangle([cx - r, cy + r - 12, cx + r, cy + r], fill=fill)


def _sd_folder(mode: str, where: Path) -> Path:
    if mode == "sd-tiny":
        sys.path.insert(0, str(ROOT / "tests" / "generate"))
        from tiny_sd import build_tiny_sd

        return build_tiny_sd(where / "sd", inpaint_unet=True)  # the folder has masks
    from bench_sd import _full_pipeline

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = _full_pipeline(device, dtype, in_channels=9)  # inpainting UNet: the folder has masks
    pipe.save_pretrained(where / "sd")
    del pipe
    return where / "sd"


def _ensure_resnet18_weights() -> None:
    """Offline: a random stand-in where torchvision looks, so pretrained=imagenet runs."""
    import torchvision

    from eibacl.models.encoders import weights_file

    path = weights_file(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
        print(f"no ImageNet weights cached: saved a random stand-in at {path} (timing only)")


def config_for(mode: str, data: str, sd_model: str, epochs: int):
    from eibacl.config import MainConfig

    common = dict(
        data=f"folder:{data}",
        ood_classes="3",
        shots=18,
        val_per_class=9,
        epochs=epochs,
        register=False,
    )
    if mode == "ddpm-cpu":
        return MainConfig(image_size=64, generator_size=32, device="cpu", **common)
    if mode == "sd-tiny":
        return MainConfig(
            image_size=32,
            generator="stable-diffusion",
            sd_model=sd_model,
            ti_steps=4,
            inference_steps=4,
            num_synthetic=1,
            num_near_ood=1,
            device="cpu",
            **common,
        )
    return MainConfig(
        image_size=128,
        encoder="resnet18",
        pretrained="imagenet",
        generator="stable-diffusion",
        sd_model=sd_model,
        guidance_scale=7.5,
        **common,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("ddpm-cpu", "sd-tiny", "sd-full"), default="ddpm-cpu")
    parser.add_argument("--epochs", type=int, default=100, help="pretrain / baseline epochs")
    args = parser.parse_args()
    import mlflow

    work = Path(tempfile.mkdtemp(prefix="eibacl-folder-bench-"))
    os.environ.setdefault("EIBACL_CACHE", str(work / "cache"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    experiment = "folder-bench"
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=(work / "artifacts").as_uri())
    os.environ["MLFLOW_EXPERIMENT_NAME"] = experiment

    data = make_folder(work / "parts")
    sd_model = str(_sd_folder(args.mode, work)) if args.mode.startswith("sd") else ""
    if args.mode == "sd-full":
        _ensure_resnet18_weights()
    from eibacl.workflow.main import main as run_main

    start = time.perf_counter()
    results = run_main(config_for(args.mode, str(data), sd_model, args.epochs))
    total = time.perf_counter() - start
    for run in mlflow.search_runs(experiment_names=[experiment], output_format="list"):
        seconds = (run.info.end_time - run.info.start_time) / 1000
        print(f"{run.data.tags.get('eibacl.entry_point', '?'):>9}: {seconds / 60:6.1f} min")
    print(f"main job ({args.mode}): {total / 60:.1f} min; work folder {work}")
    for method, summary in results.items():
        print(method, {k: round(v, 3) for k, v in summary.items()})


if __name__ == "__main__":
    main()
