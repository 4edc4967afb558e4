"""The shared training loop (tasks.trainer.Trainer) with two players: D + encoder, and G.

Only `training_step` differs from the base loop: one forward gives both losses, then each loss is
differentiated with respect to its own player's parameters only (`torch.autograd.grad` with an explicit
list), so D's loss never moves G and G's loss never moves D or the encoder, however the two graphs
share tensors. (GAN-BERT's reference code calls `g_loss.backward()` and `d_loss.backward()` on shared
graphs, which leaks each loss into the other player's gradients.) Each player has its own AdamW and
learning-rate schedule; epochs, evaluation, checkpoints, `--resume` and metrics.jsonl are the base loop's.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn

from optim import AdamW, make_scheduler
from tasks.processors import to_device
from tasks.trainer import TrainConfig, Trainer, param_groups

from .model import EmbeddingGan, GanConfig


def _set_grads(params: List[nn.Parameter], grads) -> None:
    for p, g in zip(params, grads):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g


class GanTrainer(Trainer):
    def __init__(self, model: EmbeddingGan, processors: Dict[str, object], config: TrainConfig, evaluate,
                 checkpoint_meta: Optional[dict] = None, show_progress: bool = True):
        if config.pcgrad or config.child_tuning.lower() not in ("", "none", "off"):
            raise ValueError("--pcgrad and --child_tuning are not supported by the GAN trainer (one task, two players)")
        super().__init__(model, processors, config, evaluate, checkpoint_meta, show_progress)
        self.gan: GanConfig = model.config
        # D's side: the discriminator at head_lr and the encoder (named bert.*) at lr, as in the base loop.
        d_side = nn.ModuleDict({"head": model.discriminator})
        if getattr(model, "encoder", None) is not None:
            d_side["bert"] = model.encoder
        self.d_params = [p for p in d_side.parameters() if p.requires_grad]
        self.g_params = [p for p in model.generator.parameters()] if model.generator is not None else []
        covered = {id(p) for p in self.d_params + self.g_params}
        left = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
        if left:
            raise ValueError(f"parameters belong to neither player: {left[:5]}")

        total = self.steps_per_epoch * config.epochs
        warmup = int(config.warmup_ratio * total)
        self.optimizer = AdamW(param_groups(d_side, config.lr, config.head_lr, config.weight_decay), lr=config.lr)
        self.scheduler = make_scheduler(self.optimizer, config.schedule, warmup, total)
        self.g_optimizer = self.g_scheduler = None
        if self.g_params:
            g_lr = self.gan.g_lr or config.head_lr or config.lr
            self.g_optimizer = AdamW(param_groups(model.generator, g_lr, None, config.weight_decay), lr=g_lr)
            self.g_scheduler = make_scheduler(self.g_optimizer, config.schedule, warmup, total)

    # ---- gradients, one player at a time -------------------------------------------------------------------
    def backward_discriminator(self, d_loss: torch.Tensor, retain_graph: bool = False) -> None:
        """∂ d_loss / ∂ (D, encoder) into their .grad; G's .grad is not touched."""
        if d_loss.requires_grad:
            grads = torch.autograd.grad(d_loss, self.d_params, retain_graph=retain_graph, allow_unused=True)
            _set_grads(self.d_params, grads)

    def backward_generator(self, g_loss: torch.Tensor) -> None:
        """∂ g_loss / ∂ G into G's .grad; D's and the encoder's .grad are not touched."""
        _set_grads(self.g_params, torch.autograd.grad(g_loss, self.g_params, allow_unused=True))

    def training_step(self, names: List[str], streams) -> Dict[str, float]:
        """Both losses from one forward, each player's gradient from its own loss, then both updates.
        Returns every loss term (mean over the step's batches), so metrics.jsonl records them per epoch."""
        d_loss = g_loss = None
        sums: Dict[str, float] = {}
        for name in names:  # one batch per step unless --tasks_per_step asks for more (losses summed)
            with self._autocast():
                terms = self.model.losses(to_device(next(streams[name]), self.device))
            d_loss = terms["d"] if d_loss is None else d_loss + terms["d"]
            if "g" in terms:
                g_loss = terms["g"] if g_loss is None else g_loss + terms["g"]
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.item()
        # both gradients before either update: an in-place step would invalidate the other graph
        self.backward_discriminator(d_loss, retain_graph=g_loss is not None)
        if g_loss is not None:
            self.backward_generator(g_loss)
        for params, opt, sched in ((self.d_params, self.optimizer, self.scheduler),
                                   (self.g_params, self.g_optimizer, self.g_scheduler)):
            if opt is None:
                continue
            if self.config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        return {k: v / len(names) for k, v in sums.items()}  # mean per batch, as the base loop reports

    # ---- checkpoints: the base loop's, plus G's optimizer and schedule ------------------------------------------
    def _state(self, epoch: int) -> dict:
        state = super()._state(epoch)
        if self.g_optimizer is not None:
            state["g_optimizer"] = self.g_optimizer.state_dict()
            state["g_scheduler"] = self.g_scheduler.state_dict()
        return state

    def _resume(self) -> None:
        super()._resume()
        path = self.out_dir / "last.pt"
        if self.g_optimizer is not None and path.is_file():
            state = torch.load(path, map_location="cpu", weights_only=False)
            self.g_optimizer.load_state_dict(state["g_optimizer"])
            self.g_scheduler.load_state_dict(state["g_scheduler"])
