"""Learning-rate schedules as pure functions of the step, and a scheduler that applies one.

Each schedule returns the multiplier of the base lr for the update at `step` (0 for the first update):

    constant:             1                                  (after warmup)
    linear_warmup_decay:  (T − s)/(T − W)                    for W ≤ s ≤ T, then 0
    cosine:               ½·(1 + cos(π·(s − W)/(T − W)))     for W ≤ s ≤ T, then 0

and all three warm up linearly first, s/W for s < W (W = warmup_steps, T = total_steps). These are the
formulas of HuggingFace's get_{constant,linear,cosine}_schedule_with_warmup, which the tests compare
against. As there, with warmup the very first update has lr 0.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch


def _check(warmup_steps: int, total_steps: Optional[int], needs_total: bool) -> None:
    if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 0:
        raise ValueError(f"Invalid warmup_steps: {warmup_steps!r} (must be an int >= 0)")
    if total_steps is None:
        if needs_total:
            raise ValueError("total_steps is required for this schedule")
        return
    if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps <= 0:
        raise ValueError(f"Invalid total_steps: {total_steps!r} (must be an int > 0)")
    if warmup_steps > total_steps:
        raise ValueError(f"Invalid warmup_steps: {warmup_steps} is more than total_steps={total_steps}")


def _warmup(step: int, warmup_steps: int) -> float:
    return step / warmup_steps


def constant(step: int, warmup_steps: int = 0, total_steps: Optional[int] = None) -> float:
    """1 after a linear warmup; total_steps is accepted (and checked) only so that all schedules share a call."""
    _check(warmup_steps, total_steps, needs_total=False)
    return _warmup(step, warmup_steps) if step < warmup_steps else 1.0


def linear_warmup_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup to 1 over warmup_steps, then linear decay to 0 at total_steps (BERT's schedule)."""
    _check(warmup_steps, total_steps, needs_total=True)
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup, then half a cosine from 1 down to 0 at total_steps (Loshchilov & Hutter's SGDR, one cycle)."""
    _check(warmup_steps, total_steps, needs_total=True)
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


SCHEDULES = {"constant": constant, "linear": linear_warmup_decay, "cosine": cosine}


def make_scheduler(optimizer: torch.optim.Optimizer, name: str = "linear", warmup_steps: int = 0,
                   total_steps: Optional[int] = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR that sets each group's lr to base_lr · SCHEDULES[name](step).

    Call scheduler.step() after each optimizer.step(); the scheduler's state_dict resumes the count.
    """
    if name not in SCHEDULES:
        raise ValueError(f"Invalid name: {name!r} (must be one of {sorted(SCHEDULES)})")
    fn = SCHEDULES[name]
    _check(warmup_steps, total_steps, needs_total=fn is not constant)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(fn, warmup_steps=warmup_steps, total_steps=total_steps))
