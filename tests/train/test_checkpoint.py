"""Checkpoints are plain tensors and values, read weights-only."""

from __future__ import annotations

import pytest
import torch

from eibacl.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

RAN = []


class Payload:
    def __reduce__(self):
        return (RAN.append, ("ran",))


def test_a_training_state_round_trips(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    state = {
        "epoch": 4,
        "network": net.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "metrics": {"train/loss": 1.25},
        "config": {"lr": 0.1, "strength": "0.25,0.5", "progress": False},
    }
    back = load_checkpoint(save_checkpoint(tmp_path / "last.pt", state))
    assert back["epoch"] == 4 and back["metrics"] == {"train/loss": 1.25}
    assert back["config"] == state["config"]
    assert torch.equal(back["network"]["weight"], net.weight)
    torch.optim.AdamW(net.parameters()).load_state_dict(back["optimizer"])


def test_a_checkpoint_holding_code_is_refused_naming_resume(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"epoch": 1, "config": Payload()}, path)
    with pytest.raises(CheckpointError, match="resume: .*start a new run"):
        load_checkpoint(path)
    assert RAN == []
