"""Several processes (torchrun) on one or more machines: process group, ranks, collectives.

Every entry point runs unchanged under ``torchrun --nproc-per-node N``: the library calls
`init_from_env` itself (a no-op when ``WORLD_SIZE`` is unset or 1, so the single-process
path never touches `torch.distributed`). The division of work:

- Training (`eibacl.train`): every rank draws the same *global* batch from the same seeded
  sampler and the same augmentation generator, then forwards only its contiguous slice
  (`shard_bounds`) through `DistributedDataParallel`. SupCon gathers the embeddings of the
  whole global batch with `all_gather_with_grad`, so every rank computes the same global
  loss; the gather's backward sums the (identical) gradients of all ranks (x world size)
  and DDP's gradient averaging divides by the world size, so parameter gradients equal
  the single-process gradients of the global loss. Batches, synthetic replacements,
  near-OOD negatives and augmentations are therefore those of a single-process run, and
  a checkpoint written by rank 0 resumes every rank.
- Only rank 0 (`is_primary`) talks to MLflow, writes checkpoints, runs the kNN
  validation (its metrics are broadcast) and logs the model (`eibacl.tracking` guards it).
- Generation (`eibacl.generate`): rank 0 trains (or loads) the generator while the others
  wait, then each rank makes its share of the batches of variants in its own shard folder,
  and rank 0 merges the shards into the one content-addressed set, in the order a single
  process would have written it.

Environment: torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; ``EIBACL_DIST_BACKEND`` overrides the backend (default: gloo for CPU
tensors, plus nccl for CUDA tensors when CUDA is present); ``EIBACL_DIST_TIMEOUT_MIN``
(default 120) is how long a rank waits at a collective, e.g. while rank 0 trains the
generator.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
TIMEOUT_ENV = "EIBACL_DIST_TIMEOUT_MIN"
BACKEND_ENV = "EIBACL_DIST_BACKEND"
DEFAULT_TIMEOUT_MIN = 120.0


def env_world_size() -> int:
    """The world size torchrun announces (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        return 1


def default_backend() -> str:
    """gloo for CPU tensors, plus nccl for CUDA tensors when CUDA is present."""
    override = os.environ.get(BACKEND_ENV, "").strip()
    if override:
        return override
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group torchrun describes; True when running distributed.

    A no-op (False) when ``WORLD_SIZE`` is unset or 1, and when the group already exists
    (then True). On CUDA each process uses the GPU of its ``LOCAL_RANK``.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if env_world_size() <= 1 or not dist.is_available():
        return False
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise RuntimeError(
                f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {name} is not set: launch with "
                "torchrun --nproc-per-node N (it sets RANK, LOCAL_RANK, MASTER_ADDR, "
                "MASTER_PORT), or unset WORLD_SIZE for a single process"
            )
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank() % max(1, torch.cuda.device_count()))
    minutes = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_MIN))
    dist.init_process_group(
        backend=backend or default_backend(),
        timeout=datetime.timedelta(minutes=minutes),
    )
    return dist.get_world_size() > 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    try:
        return int(os.environ.get("LOCAL_RANK", "0") or 0)
    except ValueError:
        return 0


def is_primary() -> bool:
    """True on rank 0 (and in a single process): the rank that logs and writes."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextmanager
def primary_first() -> Iterator[None]:
    """Rank 0 runs the block first, then the first rank of every other machine
    (``LOCAL_RANK`` 0), then all the others: a cache folder is filled once (once per
    machine when machines do not share it), never by two processes at once."""
    if not is_distributed():
        yield
        return
    turn = 0 if rank() == 0 else (1 if local_rank() == 0 else 2)
    for _ in range(turn):
        barrier()
    try:
        yield
    finally:
        for _ in range(2 - turn):
            barrier()


def local_device(device: torch.device) -> torch.device:
    """`cuda` means this process's GPU (``LOCAL_RANK``) when distributed."""
    if device.type == "cuda" and device.index is None and is_distributed():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def shard_bounds(n: int, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """[lo, hi) of rank's contiguous share of n items (sizes differ by at most one)."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    base, extra = divmod(n, world)
    lo = rank_ * base + min(rank_, extra)
    return lo, lo + base + (1 if rank_ < extra else 0)


def shard_sizes(n: int, world: int | None = None) -> list[int]:
    world = world_size() if world is None else world
    return [hi - lo for lo, hi in (shard_bounds(n, r, world) for r in range(world))]


def shard(seq: Sequence[T], rank_: int | None = None, world: int | None = None) -> list[T]:
    """Rank's contiguous share of `seq` (every item in exactly one rank's share)."""
    lo, hi = shard_bounds(len(seq), rank_, world)
    return list(seq[lo:hi])


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every rank's tensor (first dims may differ); the backward hands each
    rank the sum over ranks of the gradient of its own rows."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        me = dist.get_rank()
        ctx.rows = (sum(sizes[:me]), sum(sizes[: me + 1]))
        longest = max(sizes)
        padded = x.new_zeros((longest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:size] for part, size in zip(parts, sizes)])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        lo, hi = ctx.rows
        return total[lo:hi], None


def all_gather_with_grad(x: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """Every rank's `x`, concatenated in rank order along dim 0, gradients preserved.

    `sizes` are the first-dimension sizes of all ranks (equal sizes are assumed when
    omitted). In a single process `x` itself is returned.
    """
    if not is_distributed():
        return x
    sizes = tuple(int(s) for s in sizes) if sizes is not None else (len(x),) * world_size()
    if len(sizes) != world_size() or sizes[rank()] != len(x):
        raise ValueError(f"sizes {sizes} do not match world size {world_size()} / rows {len(x)}")
    return _AllGatherWithGrad.apply(x, sizes)


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank `src`'s object on every rank (pickled through CPU, whatever the backend)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=torch.device("cpu"))
    return box[0]


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Sums of `values` over ranks (float64, on CPU)."""
    if not is_distributed():
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def wrap(network: torch.nn.Module, device: torch.device) -> torch.nn.Module | None:
    """`network` in DistributedDataParallel when distributed, else None."""
    if not is_distributed():
        return None
    from torch.nn.parallel import DistributedDataParallel

    ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=ids)
