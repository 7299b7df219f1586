"""Pretraining throughput and peak memory at the default size and batch.

    python bench/bench_pretrain.py [--steps 30] [--device auto] [--negatives 64]

Prints images/s of a full SupCon training step (two augmented views per image, plus
near-OOD negatives when --negatives > 0) and the peak resident memory (CPU) or peak
allocated memory (CUDA). Defaults come from eibacl.config.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from eibacl.config import PretrainConfig
from eibacl.device import autocast, resolve_device
from eibacl.models.encoders import build_encoder
from eibacl.models.heads import SupConNetwork
from eibacl.train.batches import Batch
from eibacl.train.objectives import SupConObjective


def main() -> None:
    defaults = PretrainConfig()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--encoder", default=defaults.encoder)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--negatives", type=int, default=0)
    args = parser.parse_args()

    device = resolve_device(args.device)
    encoder = build_encoder(args.encoder, args.channels, args.width, args.image_size)
    network = SupConNetwork(encoder).to(device)
    if device.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats()
    objective = SupConObjective(network, defaults.temperature)
    optimizer = torch.optim.AdamW(network.parameters(), lr=defaults.lr)
    size = (args.batch_size, args.channels, args.image_size, args.image_size)
    images = torch.randint(0, 256, size, dtype=torch.uint8)
    labels = torch.randint(0, 7, (args.batch_size,))
    negatives = None
    if args.negatives:
        negatives = torch.randint(0, 256, (args.negatives, *size[1:]), dtype=torch.uint8)
    batch = Batch(images=images, labels=labels, negatives=negatives)
    generator = torch.Generator().manual_seed(0)
    seen = 0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, seen = time.perf_counter(), 0
        with autocast(device):
            loss, n = objective(batch, generator, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += n
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    params = sum(p.numel() for p in network.parameters())
    print(
        f"device {device}, threads {torch.get_num_threads()}, encoder {args.encoder} "
        f"width {args.width} ({params / 1e6:.2f}M parameters incl. head)"
    )
    print(
        f"batch {args.batch_size} x 2 views + {args.negatives} negatives at "
        f"{args.image_size}px: {seen / elapsed:.0f} images/s "
        f"({args.batch_size * args.steps / elapsed:.0f} real images/s)"
    )
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak resident memory {peak:.0f} MiB")


if __name__ == "__main__":
    main()
