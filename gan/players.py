"""The two players' pieces GanTrainer (gan/trainer.py) is built from: G's own optimiser, and the gradients of
each player from its own loss.

G gets its own optimiser settings (GanConfig.g_lr, g_beta1, g_schedule), as GANs usually do: a constant
rate with β₁ = 0.5 keeps G moving for the whole run, where BERT's fine-tuning rate decaying to 0 left it
near its initial weights. `generator_optimizer` is the one place that turns those fields into an AdamW and a
schedule.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn as nn

from optim import AdamW, make_scheduler
from tasks.engine.param_groups import param_groups

from .model import GanConfig


def generator_optimizer(generator: nn.Module, gan: GanConfig, default_lr: float, weight_decay: float,
                        warmup_steps: int, total_steps: int) -> Tuple[AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """G's AdamW (lr = gan.g_lr or default_lr, betas = (gan.g_beta1, 0.999)) and its schedule (gan.g_schedule)."""
    lr = gan.g_lr or default_lr
    opt = AdamW(param_groups(generator, lr, None, weight_decay), lr=lr, betas=(gan.g_beta1, 0.999))
    return opt, make_scheduler(opt, gan.g_schedule, warmup_steps, total_steps)


def _add_grads(params: List[nn.Parameter], grads) -> None:
    for p, g in zip(params, grads):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g


def player_grads(d_loss: torch.Tensor, g_loss: Optional[torch.Tensor], d_params: List[nn.Parameter],
                 g_params: List[nn.Parameter]) -> None:
    """∂d_loss/∂D into D's .grad and ∂g_loss/∂G into G's .grad, nothing across (as GanTrainer does).
    Both are taken before either optimiser steps: an in-place update would invalidate the other graph."""
    _add_grads(d_params, torch.autograd.grad(d_loss, d_params, retain_graph=g_loss is not None, allow_unused=True))
    if g_loss is not None:
        _add_grads(g_params, torch.autograd.grad(g_loss, g_params, allow_unused=True))
