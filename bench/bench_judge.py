"""What the judge costs next to the generation it judges.

    python bench/bench_judge.py                 # the default data and settings, CPU
    python bench/bench_judge.py --images 64     # fewer images timed for the generation rate

Builds the default split (Fashion-MNIST, the defaults of `generate`), trains or reuses the
cached default generator, times img2img on `--images` training images at the default
strengths, then times the judge (reference CNN + kNN/Mahalanobis fit + scoring) on as many
synthetic-like images as the default set holds (num_synthetic + num_near_ood per training
image). Prints both and their ratio; the target is a judge at <= 20% of generation time.
"""

from __future__ import annotations

import argparse
import time

import torch

from eibacl.config import GenerateRunConfig, strength_list
from eibacl.data.training_data import prepare_data
from eibacl.generate.judge.judge import fit_judge, judge_report, verdicts
from eibacl.generate.pipeline import load_or_train_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    args = parser.parse_args()
    config = GenerateRunConfig(progress=False, device="cpu")
    data = prepare_data(config)
    backend, _, reused = load_or_train_generator(config, data, torch.device("cpu"), False)
    print(f"generator {'reused' if reused else 'trained'}; {len(data.train_x)} training images")

    sources = data.train_x[: args.images]
    onehot = torch.eye(data.num_classes)[data.train_y[: args.images]]
    strengths = strength_list(config.strength)
    start = time.perf_counter()
    for i, s in enumerate(strengths):
        part = slice(i * len(sources) // len(strengths), (i + 1) * len(sources) // len(strengths))
        seeds = list(range(part.start, part.stop))  # one seed per image, as generate draws them
        backend.img2img(
            sources[part], onehot[part], s, guidance_scale=config.guidance_scale, seeds=seeds
        )
    per_image = (time.perf_counter() - start) / len(sources)
    total = len(data.train_x) * (config.num_synthetic + config.num_near_ood)
    generation = per_image * total
    print(f"img2img: {1 / per_image:.1f} images/s -> {total} images in {generation:.0f} s")

    fake = data.train_x[torch.randint(len(data.train_x), (total,))]
    labels = data.train_y[torch.randint(len(data.train_y), (total,))]
    start = time.perf_counter()
    judge = fit_judge(data.train_x, data.train_y, data.val_x, data.num_classes)
    judge_report(judge, {"set": (fake, labels)})
    verdicts(judge, fake, labels)
    judged = time.perf_counter() - start
    print(
        f"judge: {judged:.1f} s for {total} images = {100 * judged / generation:.1f}% of generation"
    )


if __name__ == "__main__":
    main()
