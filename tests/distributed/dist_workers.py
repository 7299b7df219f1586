"""Worker functions the multi-process tests spawn (top-level, so picklable by reference),
and the cases they share with the single-process references in the tests."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tests.distributed.dist_helpers import join_group, leave_group

N, M, SIDE = 7, 5, 8  # an odd global batch and odd negatives: uneven shards on 2 ranks


class TinyProjector(nn.Module):
    """BatchNorm-free stand-in for SupConNetwork: uint8-free float images -> unit vectors."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 32), nn.Tanh())
        self.head = nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.head(self.net(x)), dim=1)


class TinyClassifier(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 32), nn.Tanh())
        self.classifier = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.net(x))


def make_batch():  # -> eibacl.train.batches.Batch
    from eibacl.train.batches import Batch

    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (N, 1, SIDE, SIDE), generator=gen, dtype=torch.uint8)
    return Batch(
        images=images,
        labels=torch.tensor([0, 1, 2, 0, 1, 0, 2]),
        extra_views=torch.randint(0, 256, (N, 1, SIDE, SIDE), generator=gen, dtype=torch.uint8),
        negatives=torch.randint(0, 256, (M, 1, SIDE, SIDE), generator=gen, dtype=torch.uint8),
    )


def objectives():
    """(name, objective) pairs with fixed initial weights."""
    from eibacl.train.feature_negatives import FeatureNegatives
    from eibacl.train.objectives import CrossEntropyObjective, SupConObjective

    torch.manual_seed(0)
    supcon = SupConObjective(TinyProjector(), temperature=0.1)
    torch.manual_seed(0)
    ce = CrossEntropyObjective(TinyClassifier(), oe_weight=0.5)
    torch.manual_seed(0)
    features = FeatureNegatives(per_batch=6, noise=0.1, quantile=0.5)
    supcon_features = SupConObjective(TinyProjector(), 0.1, features)
    return [("supcon", supcon), ("ce", ce), ("supcon_features", supcon_features)]


def loss_and_gradients(objective, ddp: nn.Module | None = None) -> dict:
    """One step's loss and parameter gradients (the augmentation generator seeded alike)."""
    if ddp is not None:
        objective.ddp = ddp
    loss, count = objective(make_batch(), torch.Generator().manual_seed(5), torch.device("cpu"))
    loss.backward()
    grads = [p.grad.detach().clone() for p in objective.network.parameters()]
    return {"loss": loss.detach().item(), "count": count, "grads": grads}


def gather_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """all_gather_with_grad on uneven rows, then both objectives through DDP."""
    join_group(rank, world, port)
    from eibacl import distributed

    results: dict = {}
    # rows of rank r: r + 2 rows with values 10 * r + row; loss weights w known to all
    x = (10.0 * rank + torch.arange(rank + 2, dtype=torch.float64)).view(-1, 1).repeat(1, 3)
    x.requires_grad_(True)
    sizes = [r + 2 for r in range(world)]
    gathered = distributed.all_gather_with_grad(x, sizes)
    weights = torch.arange(gathered.numel(), dtype=torch.float64).view_as(gathered)
    (gathered * weights).sum().backward()
    results["gathered"] = gathered.detach()
    results["x_grad"] = x.grad.detach()
    lo = sum(sizes[:rank])
    results["expected_x_grad"] = world * weights[lo : lo + sizes[rank]]
    for name, objective in objectives():
        ddp = distributed.wrap(objective.network, torch.device("cpu"))
        results[name] = loss_and_gradients(objective, ddp)
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    leave_group()


def _stop_after(last_epoch: int):
    def on_epoch(epoch: int, metrics: dict) -> None:
        if epoch == last_epoch:
            raise KeyboardInterrupt

    return on_epoch


def training_worker(
    rank: int, world: int, port: int, out_dir: str, tiny: dict, far_ood: str
) -> None:
    """Under DDP: a 3-epoch pretrain; the same interrupted after epoch 2 and resumed; a
    cross-entropy baseline evaluated with `far_ood` (the tests give noise images: MNIST
    costs more than the tiny run, and they check the distribution, not OOD scores).
    Records what every rank saw."""
    join_group(rank, world, port)
    from eibacl import distributed, tracking
    from eibacl.config import BaselineConfig, PretrainConfig
    from eibacl.train.baseline import baseline
    from eibacl.train.pretrain import pretrain

    three = PretrainConfig(**(tiny | {"epochs": 3, "checkpoint_every": 1}))  # interrupted at 2
    seen: dict = {"rank": rank}
    log_encoder = tracking.log_encoder
    tracking.log_encoder = lambda encoder, name="encoder": "skipped"  # the reference run's
    reference = pretrain(three)
    tracking.log_encoder = log_encoder
    seen["reference"] = (reference.run_id, reference.metrics)
    try:
        pretrain(three, on_epoch=_stop_after(2))
    except KeyboardInterrupt:
        pass
    killed = tracking.find_runs("attributes.status = 'KILLED'") if distributed.is_primary() else []
    killed_id = distributed.broadcast_object(killed[0].info.run_id if killed else None)
    resumed = pretrain(PretrainConfig(**(tiny | {"resume": killed_id})))
    seen["resumed"] = (killed_id, resumed.run_id, resumed.metrics, resumed.model_uri)
    changes = {"epochs": 2, "knn_k": 5, "register": False, "far_ood": far_ood}
    ce = baseline(BaselineConfig(**(tiny | changes)))
    seen["baseline"] = (ce.run_id, ce.metrics)
    torch.save(seen, Path(out_dir) / f"rank{rank}.pt")
    leave_group()


def generate_worker(rank: int, world: int, port: int, out_dir: str, config: dict) -> None:
    """The `generate` entry point's function, on every rank."""
    join_group(rank, world, port)
    from eibacl.config import GenerateRunConfig
    from eibacl.generate.pipeline import generate

    result = generate(GenerateRunConfig(**config))
    record = {"set_dir": str(result.set_dir), "key": result.key, "run_id": result.run_id}
    torch.save(record | {"counts": result.counts}, Path(out_dir) / f"rank{rank}.pt")
    leave_group()


def abort_once_worker(rank: int, world: int, port: int, marker: str) -> None:
    """Rank 1 dies by SIGABRT the first time (the marker file records it), as a gloo
    start-up abort does; every later launch returns at once."""
    import os

    if rank == 1 and not Path(marker).exists():
        Path(marker).touch()
        os.abort()
