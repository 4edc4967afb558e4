"""What a technique is: a registry entry that declares itself as data and attaches in up to three ways.

As data: its flags (`Config`, a frozen dataclass: each field one --flag, declared nowhere else), the CLIs
that offer it, its ablation arms, and the techniques it cannot run with (`excludes`). How it attaches, each
a method that does nothing unless the technique overrides it:

    before_finetuning(cfg, parts)            train or change the model before the loop starts (the phases:
                                             DAE, contrastive, and --finetune_encoder frozen); a technique
                                             whose `finetunes(cfg)` is False ends the run there and saves
                                             what it trained itself (the phases: the encoder)
    wrap_processors(cfg, model, processors)  change a task's data or loss (CAT, R-Drop, MNRL)
    callback(cfg, model, seed)               hook the training loop (PCGrad, Child-Tuning, EMA, the checkpoint
                                             average): a Callback, whose hooks tasks/engine/callbacks.py lists

Adding a technique is its module and one line in tasks/techniques/__init__.py's REGISTRY (docs/techniques.md
works an example through). `gan/train.py` calls no before_finetuning: a technique that needs it leaves "gan"
out of its `clis`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch

from ..engine.callbacks import Callback
from ..engine.config import TrainConfig, dataclass_from_args


@dataclass
class RunParts:
    """What `before_finetuning` works on: the run's model and processors as built, the processors it selects on
    (their "dev" split: the held-out training rows under --select_on heldout), and the settings it shares."""
    model: torch.nn.Module
    processors: Dict[str, object]
    selection: Dict[str, object]
    tokenizer: object
    train_config: TrainConfig  # the run's loop settings (seed, out_dir, device); a phase adapts its own copy
    batch_size: int
    max_length: int
    checkpoint: str            # the --model the encoder came from (the MLM phase starts its head from it)
    is_main: bool = True       # the process that writes files (rank 0 under DDP)


class Technique:
    """A registry entry: its name, what it is, its flags (Config), where it applies, and how it attaches."""

    name: str = ""
    summary: str = ""
    Config: type = None            # a frozen dataclass; each field is a --flag
    clis: Tuple[str, ...] = ("multitask", "classifier", "gan")  # the CLIs that offer it
    arms: Dict[str, Tuple[Sequence[str], str]] = {}  # ablation arm -> (its flags, what it is)
    excludes: Dict[str, str] = {}  # a technique it cannot run with -> the error saying why

    def config(self, args: argparse.Namespace):
        return dataclass_from_args(self.Config, args)

    def enabled(self, cfg) -> bool:
        """Whether these flags switch the technique on (the default: any flag away from its default)."""
        return cfg != self.Config()

    def check(self, cfg, tasks: Sequence[str]) -> Optional[str]:
        """Why its flags cannot train these tasks, or None: checked when parsing."""
        return None

    def before_finetuning(self, cfg, parts: RunParts) -> Dict[str, float]:
        """Train or change parts.model before fine-tuning; returns scores to report (e.g. each phase's dev loss),
        which the run's final metrics record holds under "before_finetuning"."""
        return {}

    def finetunes(self, cfg) -> bool:
        """False: the run ends after before_finetuning, which must then save what it trained."""
        return True

    def callback(self, cfg, model: torch.nn.Module, seed: int = 0) -> Optional[Callback]:
        """The loop's hooks for this technique, or None when its flags leave it off."""
        return None

    def wrap_processors(self, cfg, model: torch.nn.Module, processors: Dict[str, object]) -> Dict[str, object]:
        return processors


class ProcessorWrapper:
    """A processor around another, for a technique that changes the loss or the data: the same batches and
    the same loss weight (multitask: --{task}_loss_weight) unless the subclass says otherwise."""

    def __init__(self, base):
        self.base = base

    @property
    def loss_weight(self) -> float:
        return getattr(self.base, "loss_weight", 1.0)

    @property
    def innermost(self):
        """The task's own processor under every wrapper (its examples, tokenizer, settings)."""
        inner = self.base
        while hasattr(inner, "base"):
            inner = inner.base
        return inner

    def num_batches(self) -> int:
        return self.base.num_batches()

    def batches(self, epoch: int):
        return self.base.batches(epoch)

    def loss(self, model, batch) -> torch.Tensor:
        return self.base.loss(model, batch)
