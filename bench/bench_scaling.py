"""Scaling of SupCon pretraining throughput with the number of processes (DDP), and on a GPU
the throughput with and without bf16 autocast and channels-last.

    python bench/bench_scaling.py [--procs 1,2] [--steps 15] [--batch-size 128]
    python bench/bench_scaling.py --gpu-only        # just the CUDA table

CPU part: one full training step (two augmented views, forward, global SupCon loss,
backward, AdamW step) on a fixed global batch, run by 1 process and then by N processes
under DistributedDataParallel with gloo (each rank its slice of the global batch, the
embeddings gathered; see eibacl.distributed). Processes share the machine's cores: each
of N processes gets cores/N threads, so the comparison is of the same hardware. The
figure is images through the network per second (2 views x global batch / step time),
summed over ranks.

GPU part (when CUDA is present): the same step on one GPU in fp32, bf16 autocast, and
bf16 autocast + channels-last, for the small ResNet at 32 px and resnet18 at 64 and 128 px.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import time

import torch

from eibacl.config import PretrainConfig
from eibacl.models.encoders import build_encoder
from eibacl.models.heads import SupConNetwork
from eibacl.train.batches import Batch
from eibacl.train.objectives import SupConObjective


def _batch(batch_size: int, image_size: int, channels: int = 1) -> Batch:
    gen = torch.Generator().manual_seed(0)
    size = (batch_size, channels, image_size, image_size)
    return Batch(
        images=torch.randint(0, 256, size, dtype=torch.uint8, generator=gen),
        labels=torch.randint(0, 7, (batch_size,), generator=gen),
    )


def _steps(
    objective: SupConObjective,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    device: torch.device,
    warmup: int,
    steps: int,
    amp: bool = False,
) -> float:
    """Seconds per step after `warmup` steps."""
    generator = torch.Generator().manual_seed(0)
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        context = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        with context:
            loss, _ = objective(batch, generator, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def _cpu_worker(rank: int, world: int, port: int, args: argparse.Namespace, queue) -> None:
    threads = args.threads or max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    if world > 1:
        os.environ.update(
            {
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(world),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
            }
        )
    from eibacl import distributed

    distributed.init_from_env("gloo")
    torch.manual_seed(0)
    device = torch.device("cpu")
    encoder = build_encoder(args.encoder, 1, args.width, args.image_size)
    network = SupConNetwork(encoder)
    objective = SupConObjective(network, 0.1)
    objective.ddp = distributed.wrap(network, device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    batch = _batch(args.batch_size, args.image_size)
    seconds = _steps(objective, optimizer, batch, device, args.warmup, args.steps)
    if distributed.is_primary():
        queue.put({"procs": world, "threads_per_proc": threads, "s_per_step": seconds})
    if world > 1:
        distributed.barrier()
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_scaling(args: argparse.Namespace) -> list[dict]:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    rows = []
    for world in [int(p) for p in args.procs.split(",")]:
        queue = ctx.Queue()
        processes = mp.start_processes(
            _cpu_worker,
            args=(world, _free_port(), args, queue),
            nprocs=world,
            join=False,
            start_method="spawn",
        )
        row = queue.get(timeout=1800)
        while not processes.join():
            pass
        row["images_per_s"] = 2 * args.batch_size / row["s_per_step"]
        rows.append(row)
    base = rows[0]["images_per_s"]
    for row in rows:
        row["speedup"] = row["images_per_s"] / base
    return rows


def gpu_table(args: argparse.Namespace) -> list[dict]:
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    cases = [("resnet-small", 32, args.width, 512), ("resnet18", 64, 64, 256)]
    cases.append(("resnet18", 128, 64, 256))
    rows = []
    for encoder_name, size, width, batch_size in cases:
        batch = _batch(batch_size, size, channels=3)
        for label, amp, channels_last in (
            ("fp32", False, False),
            ("bf16", True, False),
            ("bf16+channels_last", True, True),
        ):
            torch.manual_seed(0)
            network = SupConNetwork(build_encoder(encoder_name, 3, width, size)).to(device)
            if channels_last:
                network = network.to(memory_format=torch.channels_last)
            objective = SupConObjective(network, 0.1)
            optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
            seconds = _steps(objective, optimizer, batch, device, 5, args.gpu_steps, amp=amp)
            rows.append(
                {
                    "encoder": encoder_name,
                    "image_size": size,
                    "batch_size": batch_size,
                    "mode": label,
                    "images_per_s": 2 * batch_size / seconds,
                }
            )
    return rows


def main() -> None:
    defaults = PretrainConfig()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--procs", default="1,2", help="process counts, comma-separated")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--encoder", default=defaults.encoder)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument(
        "--threads", type=int, default=0, help="threads per process (0 = cores / processes)"
    )
    parser.add_argument("--gpu-steps", type=int, default=30)
    parser.add_argument("--gpu-only", action="store_true")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()

    out: dict = {"cpu_cores": os.cpu_count(), "torch": torch.__version__}
    if not args.gpu_only:
        out["cpu"] = cpu_scaling(args)
    if torch.cuda.is_available():
        out["gpu_name"] = torch.cuda.get_device_name()
        out["gpu"] = gpu_table(args)
    if args.json:
        print(json.dumps(out, indent=1))
        return
    if "cpu" in out:
        print(
            f"CPU ({out['cpu_cores']} cores), {args.encoder} width {args.width}, "
            f"{args.image_size}px, global batch {args.batch_size} x 2 views"
        )
        print("| processes | threads each | images/s | speed-up |")
        print("|---|---|---|---|")
        for row in out["cpu"]:
            print(
                f"| {row['procs']} | {row['threads_per_proc']} | {row['images_per_s']:.0f} "
                f"| {row['speedup']:.2f}x |"
            )
    if "gpu" in out:
        print(f"\nGPU: {out['gpu_name']}")
        print("| encoder | px | batch | mode | images/s |")
        print("|---|---|---|---|---|")
        for row in out["gpu"]:
            print(
                f"| {row['encoder']} | {row['image_size']} | {row['batch_size']} | "
                f"{row['mode']} | {row['images_per_s']:.0f} |"
            )


if __name__ == "__main__":
    main()
