"""Benchmark of the embedded DDPM generator: training time and img2img throughput.

    python bench/bench_ddpm.py                    # default model, 7 classes x 100 images
    python bench/bench_ddpm.py --train-steps 20   # quick look
    python bench/bench_ddpm.py --quality          # + reference-classifier check of recipes
    python bench/bench_ddpm.py --load <generator folder> --quality   # a trained generator

Uses Fashion-MNIST from /usr/share/datasets/fashion-mnist/ (or $FASHION_MNIST_DIR) when
present (7 classes, the
DESIGN split: Pullover, Shirt and Ankle boot held out), otherwise random images. Runs on
CPU, and also on CUDA when available (``--device`` to pick one).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eibacl.data.fashion_mnist import CLASS_NAMES
from eibacl.generate.backends.ddpm import DDPMBackend, DDPMConfig
from eibacl.generate.dafusion.recipes import NEAR_OOD_RECIPES

FMNIST = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
ID_CLASSES = [0, 1, 3, 4, 5, 7, 8]


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_data(
    per_class: int, size: int, seed: int, split: str = "train", classes: list[int] | None = None
):
    """(images uint8 N×1×size×size, labels, class names, source) for the benchmark;
    `classes` (Fashion-MNIST label ids) default to the DESIGN split's 7."""
    id_classes = ID_CLASSES if classes is None else classes
    prefix = "train" if split == "train" else "t10k"
    img_path = FMNIST / f"{prefix}-images-idx3-ubyte.gz"
    if img_path.is_file():
        images = _idx(img_path)
        labels = _idx(FMNIST / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        rng = np.random.default_rng(seed)
        keep_x, keep_y = [], []
        for new, old in enumerate(id_classes):
            idx = rng.choice(np.flatnonzero(labels == old), per_class, replace=False)
            keep_x.append(images[idx])
            keep_y += [new] * per_class
        x = torch.from_numpy(np.concatenate(keep_x)).unsqueeze(1).float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        x = x.round().clamp(0, 255).to(torch.uint8)
        return x, torch.tensor(keep_y), [CLASS_NAMES[i] for i in id_classes], "fashion-mnist"
    gen = torch.Generator().manual_seed(seed)
    k = len(id_classes)
    x = torch.randint(0, 256, (k * per_class, 1, size, size), generator=gen, dtype=torch.uint8)
    y = torch.arange(k).repeat_interleave(per_class)
    return x, y, [f"class{i}" for i in range(k)], "random"


def bench(args: argparse.Namespace, device: str) -> None:
    classes = None
    if args.load:  # the classes the saved generator was trained on
        saved = json.loads((Path(args.load) / "config.json").read_text())
        classes = [CLASS_NAMES.index(name) for name in saved["config"]["class_names"]]
    args.classes = classes
    images, labels, names, source = load_data(
        args.per_class, args.image_size, args.seed, classes=classes
    )
    k = len(names)
    hyper = {"train_steps": args.train_steps} if args.train_steps else {}
    if args.max_minutes:
        hyper["max_minutes"] = args.max_minutes
    if args.load:  # a saved generator (e.g. a generate run's cache folder): no training
        backend = DDPMBackend.load(Path(args.load), device=device)
        if backend.config.class_names != names:
            raise SystemExit(
                f"--load {args.load}: the generator knows {backend.config.class_names}, the "
                f"benchmark's classes are {names}"
            )
    else:
        backend = DDPMBackend(args.image_size, 1, k, device=device, **hyper)
    cfg = backend.config
    print(
        f"[{device}] data={source} images={tuple(images.shape)} params="
        f"{backend.num_parameters / 1e6:.2f}M train_steps={cfg.train_steps} "
        f"batch={cfg.batch_size} threads={torch.get_num_threads()}"
    )
    start = time.perf_counter()
    if not args.load:
        backend.fit(images, labels, names, progress=not args.no_progress)
    seconds = max(time.perf_counter() - start, 1e-9)
    losses = backend.loss_history
    print(
        f"[{device}] train: {backend.trained_steps} steps in {seconds:.1f} s "
        f"({backend.trained_steps / seconds:.2f} steps/s); loss first10 "
        f"{np.mean(losses[:10]):.4f} last10 {np.mean(losses[-10:]):.4f}"
    )
    if args.save:
        backend.save(Path(args.save))

    n = min(args.sample_images, images.shape[0])
    src = images[:n]
    one_hot = F.one_hot(labels[:n], k).float()
    for strength in args.strengths:
        start = time.perf_counter()
        backend.img2img(src, one_hot, strength, guidance_scale=args.guidance, seeds=list(range(n)))
        seconds = time.perf_counter() - start
        steps = max(round(strength * cfg.inference_steps), 1)
        print(
            f"[{device}] img2img strength={strength:g} ({steps}/{cfg.inference_steps} DDIM "
            f"steps, guidance {args.guidance:g}): {n / seconds:.1f} images/s"
        )
    if args.quality:
        quality(backend, images, labels, names, args, device)


def quality(backend, images, labels, names, args, device) -> None:
    from eibacl.generate.dafusion.recipes import ID
    from eibacl.generate.judge.quality import synthetic_quality, train_reference_classifier

    k = len(names)
    start = time.perf_counter()
    clf = train_reference_classifier(images, labels, k, seed=args.seed, device=device)
    val_x, val_y, _, _ = load_data(
        50, args.image_size, args.seed + 1, split="test", classes=args.classes
    )
    print(f"reference classifier trained in {time.perf_counter() - start:.1f} s")
    n = min(args.sample_images, images.shape[0])
    idx = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(1))[:n]
    src, lab = images[idx], labels[idx]
    rng = np.random.default_rng(args.seed)
    all_x, all_y, kinds, recipes, strengths = [], [], [], [], []
    for s in (0.25, 0.5, 0.75, 1.0):
        w = torch.stack([ID.build(int(y), k, rng, strength=s)[0] for y in lab])
        all_x.append(backend.img2img(src, w, s, guidance_scale=args.guidance, seeds=list(range(n))))
        all_y.append(lab)
        kinds += ["id"] * n
        recipes += ["id"] * n
        strengths += [s] * n
    weights_all = [F.one_hot(lab, k).float()] * 4
    for name, recipe in NEAR_OOD_RECIPES.items():
        w = torch.stack([recipe.build(int(y), k, rng)[0] for y in lab])
        s = recipe.default_strength
        extra = {}
        if recipe.negative_source:  # away: the source's class is the guidance's negative
            extra["negative_weights"] = torch.stack(
                [recipe.negative_weights(int(y), k) for y in lab]
            )
        all_x.append(
            backend.img2img(src, w, s, guidance_scale=args.guidance, seeds=list(range(n)), **extra)
        )
        all_y.append(lab)
        weights_all.append(w[:, :k])  # the null column (away's target) is no class
        kinds += ["near_ood"] * n
        recipes += [name] * n
        strengths += [s] * n
    metrics = synthetic_quality(
        clf,
        torch.cat(all_x),
        torch.cat(all_y),
        kinds,
        recipes,
        strengths=strengths,
        class_weights=torch.cat(weights_all),
        real_val_images=val_x,
        real_val_labels=val_y,
    )
    for key, value in sorted(metrics.items()):
        if not key.endswith("/count"):
            print(f"  {key} = {value:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=0, help="0 = the model default")
    parser.add_argument("--max-minutes", type=float, default=0.0)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=DDPMConfig.image_size)
    parser.add_argument("--sample-images", type=int, default=128)
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.5, 0.75, 1.0])
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--device", default="", help="cpu or cuda; default both if CUDA")
    parser.add_argument("--quality", action="store_true")
    parser.add_argument("--save", default="")
    parser.add_argument("--load", default="", help="a saved ddpm generator folder: no training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    devices = [args.device] if args.device else ["cpu"]
    if not args.device and torch.cuda.is_available():
        devices.append("cuda")
    for device in devices:
        bench(args, device)


if __name__ == "__main__":
    main()
