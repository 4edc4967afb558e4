"""Child-Tuning (Xu et al., EMNLP 2021) as a technique: gradient masks between clipping and the update
(optim/child_tuning.py has the masks and their tests).

-F draws a fresh Bernoulli(p) mask every step and rescales by 1/p; -D keeps the top p of the encoder layers'
weights by empirical Fisher information, estimated once before training. As in the reference, the mask acts
on gradients only: AdamW's decoupled weight decay still shrinks the weights outside the child network.
With p = 0.3 the masked update of -F is smaller than plain fine-tuning's at the same learning rate, so
compare the two each at its own tuned learning rate (docs/techniques.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from optim import make_child_tuning

from ..engine.sampling import TaskStream, task_schedule
from ..engine.callbacks import Callback
from ..engine.config import flag
from .base import Technique


@dataclass(frozen=True)
class ChildTuningConfig:
    child_tuning: str = flag("none", "Child-Tuning (Xu et al. 2021): F (random masks) or D (Fisher-chosen weights)",
                             choices=("none", "F", "D"))
    child_tuning_p: float = flag(0.3, "share of the gradient kept (p_F, p_D)")
    child_tuning_fisher_batches: int = flag(0, "(D) batches of the Fisher pass; 0: the whole training set, as the reference")
    child_tuning_fisher_clip: float = flag(1.0, "(D) each tensor's gradient clipped to this norm before squaring, as "
                                                "the reference; 0: unclipped")

    def __post_init__(self):
        if self.child_tuning not in ("none", "F", "D"):
            raise ValueError(f"--child_tuning must be none, F or D, got {self.child_tuning!r}")
        if not 0 < self.child_tuning_p <= 1:
            raise ValueError(f"--child_tuning_p must be in (0, 1], got {self.child_tuning_p}")


class ChildTuningCallback(Callback):
    def __init__(self, cfg: ChildTuningConfig, seed: int):
        self.cfg, self.seed, self.child = cfg, seed, None

    def on_fit_start(self, trainer) -> None:
        """Build the masks (for -D: one Fisher pass over the training batches, before any update)."""
        cfg = self.cfg
        generator = torch.Generator(device=trainer.device).manual_seed(self.seed)
        sample = []
        if cfg.child_tuning == "D":
            sizes = {n: p.num_batches() for n, p in trainer.processors.items()}
            streams = {n: TaskStream(p, epoch=-1) for n, p in trainer.processors.items()}
            names = [n for step in task_schedule(sizes, "round_robin", 1, 0, 1, self.seed) for n in step]
            count = cfg.child_tuning_fisher_batches or len(names)
            sample = [(n, next(streams[n])) for n in names[:count]]
        self.child = make_child_tuning(cfg.child_tuning, cfg.child_tuning_p, model=trainer.model, batches=sample,
                                       loss_fn=lambda model, item: trainer.task_loss(*item), generator=generator,
                                       max_grad_norm=cfg.child_tuning_fisher_clip or None) \
            if cfg.child_tuning == "D" else make_child_tuning("F", cfg.child_tuning_p, generator=generator)

    def on_before_update(self, trainer) -> None:
        self.child.apply(trainer.model)  # after clipping: the reference masks inside its optimizer's step

    def state_dict(self) -> dict:
        return self.child.state_dict() if self.child is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.child.load_state_dict(state)


class ChildTuningTechnique(Technique):
    name, summary, Config = "child_tuning", "Child-Tuning-F / -D gradient masks", ChildTuningConfig
    clis = ("multitask", "classifier")
    arms = {"child_f": (("--child_tuning", "F"), "Child-Tuning-F"),
            "child_d": (("--child_tuning", "D"), "Child-Tuning-D")}

    def enabled(self, cfg: ChildTuningConfig) -> bool:
        return cfg.child_tuning != "none"

    def callback(self, cfg: ChildTuningConfig, model, seed: int = 0) -> Optional[Callback]:
        return ChildTuningCallback(cfg, seed) if cfg.child_tuning != "none" else None
