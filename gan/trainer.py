"""The shared training loop (tasks/engine/trainer.py) with two players: D + encoder, and G.

It overrides three hooks and nothing else:
- configure_optimizers: D's AdamW (the discriminator at head_lr, the encoder at lr, BERT's schedule) and
  G's own (GanConfig.g_lr, g_beta1, g_schedule: GAN practice, gan/players.py), each built once;
- training_step: one forward gives both losses, then each loss is differentiated with respect to its own
  player's parameters only (`torch.autograd.grad` with an explicit list), so D's loss never moves G and G's
  loss never moves D or the encoder, however the two graphs share tensors. (GAN-BERT's reference code calls
  `g_loss.backward()` and `d_loss.backward()` on shared graphs, which leaks each loss into the other player's
  gradients.) Under DDP, autograd.grad bypasses DDP's hooks, so the step averages the gradients over the
  ranks itself (the Accelerator's average_gradients);
- clip_gradients: each player's gradient clipped on its own.
Epochs, evaluation, checkpoints (both optimizers and schedules included), `--resume` and metrics are the
base loop's.
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn as nn

from optim import AdamW, make_scheduler
from tasks.engine import Trainer
from tasks.engine.param_groups import param_groups

from .model import EmbeddingGan
from .players import generator_optimizer, player_grads


class DiscriminatorSide(nn.Module):
    """D's player: the discriminator (at head_lr) and the encoder, when the model has one (at lr)."""

    def __init__(self, model: EmbeddingGan):
        super().__init__()
        self.head, self.encoder = model.discriminator, getattr(model, "encoder", None)

    def encoder_parameters(self):
        return self.encoder.parameters() if self.encoder is not None else iter(())


class GanTrainer(Trainer):
    synchronises_through_ddp = False  # the two players' gradients are averaged over the ranks in training_step

    def players(self):
        """(D's side, G): D's side is the discriminator with the encoder, when there is one."""
        return DiscriminatorSide(self.model), self.model.generator

    def configure_optimizers(self):
        cfg, model = self.config, self.model
        d_side, generator = self.players()
        self.d_params = [p for p in d_side.parameters() if p.requires_grad]
        self.g_params = list(generator.parameters()) if generator is not None else []
        covered = {id(p) for p in self.d_params + self.g_params}
        left = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
        if left:
            raise ValueError(f"parameters belong to neither player: {left[:5]}")
        warmup = int(cfg.warmup_ratio * self.total_steps)
        d_opt = AdamW(param_groups(d_side, cfg.lr, cfg.head_lr, cfg.weight_decay, cfg.layer_lr_decay), lr=cfg.lr)
        optimizers, schedulers = [d_opt], [make_scheduler(d_opt, cfg.schedule, warmup, self.total_steps)]
        if generator is not None:
            g_opt, g_sched = generator_optimizer(generator, model.config, cfg.head_lr or cfg.lr, cfg.weight_decay,
                                                 warmup, self.total_steps)
            optimizers.append(g_opt)
            schedulers.append(g_sched)
        return optimizers, schedulers

    def training_step(self, micro: List[List[str]], streams) -> Dict[str, float]:
        """Both losses from one forward per batch, each player's gradient from its own loss, then both updates.
        Returns every loss term (mean over the step's batches), so the metrics record them per evaluation."""
        names = [name for step in micro for name in step]
        scale = 1.0 / len(micro)  # --grad_accum: the mean over the accumulated steps
        sums: Dict[str, float] = {}
        for name in names:  # one batch per step unless --tasks_per_step / --grad_accum ask for more
            with self.precision.autocast():
                terms = self.model.losses(self.accelerator.to_device(next(streams[name])))
            # both gradients before either update: an in-place step would invalidate the other graph
            player_grads(self.precision.scale(terms["d"] * scale),
                         self.precision.scale(terms["g"] * scale) if "g" in terms else None,
                         self.d_params, self.g_params)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.item()
        self.accelerator.average_gradients(self.d_params + self.g_params)
        self.optimizer_step()
        return {k: v / len(names) for k, v in sums.items()}  # mean per batch, as the base loop reports

    def clip_gradients(self) -> None:
        if self.config.max_grad_norm > 0:
            for params in (self.d_params, self.g_params):
                if params:
                    torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
