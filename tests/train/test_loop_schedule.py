"""The learning-rate schedule: linear warm-up to the peak, then cosine decay to zero."""

from __future__ import annotations

import math

import pytest
import torch

from eibacl.train.schedule import warmup_cosine


def _lrs(warmup: int, total: int, peak: float = 1.0) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    scheduler = warmup_cosine(optimizer, warmup, total)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_warmup_then_cosine_to_zero():
    lrs = _lrs(warmup=4, total=20, peak=2.0)
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert lrs[4] == pytest.approx(2.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))  # non-increasing after warm-up
    middle = 4 + (20 - 4) // 2
    assert lrs[middle] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 15 / 16)))
    assert all(lr > 0 for lr in lrs)


def test_no_warmup_starts_at_peak_and_never_goes_negative():
    lrs = _lrs(warmup=0, total=10)
    assert lrs[0] == pytest.approx(1.0)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, 0, 10)
    for _ in range(15):  # past the end: stays at zero
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_factor_follows_a_time_budget_when_it_is_further_spent():
    from eibacl.train.schedule import warmup_cosine_factor

    assert warmup_cosine_factor(0, 4, 100) == 0.25  # warm-up: (step + 1) / warmup
    assert warmup_cosine_factor(4, 4, 100) == 1.0  # the decay starts at the peak
    # 10 of 96 decay steps spent, but half of the time budget: cos(pi / 2) -> 0.5
    assert abs(warmup_cosine_factor(14, 4, 100, progress=0.5) - 0.5) < 1e-12
    assert warmup_cosine_factor(14, 4, 100, progress=0.0) == warmup_cosine_factor(14, 4, 100)
    assert abs(warmup_cosine_factor(5, 4, 100, progress=1.0)) < 1e-12
