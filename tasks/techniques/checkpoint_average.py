"""Checkpoint averaging: the mean of the weights at the last K evaluations,

    w̄ = (w_{e−K+1} + … + w_e) / K          (e: this evaluation; fewer than K so far: all of them)

is what is evaluated, kept as the best checkpoint and predicted with. Training goes on from the model's own
weights; only evaluation sees the average. This is fairseq's `scripts/average_checkpoints.py` done during the
run (and LAWA, Kaddour 2022, "latest weight averaging"): points along one trajectory, late in training, average
into a flatter, often better solution. With one evaluation per epoch, K = 2 keeps the better of epoch 1, the
mean of epochs 1–2 and the mean of epochs 2–3; `--eval_every` gives it more, closer points. Unlike EMA (every
step, exponential weights) it holds K plain copies of the weights, in CPU memory and in `last.safetensors`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from ..engine.callbacks import Callback
from ..engine.config import flag
from .base import Technique


@dataclass(frozen=True)
class CheckpointAverageConfig:
    average_evaluations: int = flag(0, "> 1: evaluate, keep and predict with the mean of the weights at the last K "
                                       "evaluations, this one included (0 or 1: off)")

    def __post_init__(self):
        if self.average_evaluations < 0:
            raise ValueError(f"average_evaluations must be >= 0 (0: off), got {self.average_evaluations}")


def average_state(snapshots: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """The elementwise mean of every floating-point tensor (computed in at least float32, stored in its own
    dtype); other tensors (integer buffers such as position ids) are taken from the last snapshot."""
    def mean(k, v):
        wide = torch.promote_types(v.dtype, torch.float32)
        return torch.stack([s[k].to(wide) for s in snapshots]).mean(0).to(v.dtype)
    return {k: mean(k, v) if v.is_floating_point() else v.clone() for k, v in snapshots[-1].items()}


def _own_weights(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class CheckpointAverageCallback(Callback):
    def __init__(self, model: torch.nn.Module, k: int):
        self.k = k
        self.average = copy.deepcopy(model)  # an eager copy, made before any torch.compile
        self.steps: List[int] = []
        self.snapshots: List[Dict[str, torch.Tensor]] = []
        self._loaded_at: Optional[int] = None

    def evaluated_model(self, trainer) -> torch.nn.Module:
        """Called at every evaluation (and again when the best is saved): a new step adds a snapshot."""
        if not self.steps or self.steps[-1] != trainer.progress.global_step:
            self.steps.append(trainer.progress.global_step)
            self.snapshots.append(_own_weights(trainer.model))
            self.steps, self.snapshots = self.steps[-self.k:], self.snapshots[-self.k:]
        if self._loaded_at != self.steps[-1]:
            self.average.load_state_dict(average_state(self.snapshots))
            self.average.to(next(trainer.model.parameters()).device)
            self._loaded_at = self.steps[-1]
        return self.average

    def state_dict(self) -> dict:
        return {"steps": list(self.steps), "snapshots": list(self.snapshots)}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.snapshots, self._loaded_at = list(state["steps"]), list(state["snapshots"]), None


class CheckpointAverageTechnique(Technique):
    name, summary = "checkpoint_average", "the mean of the weights at the last K evaluations"
    Config = CheckpointAverageConfig
    arms = {"average2": (("--average_evaluations", "2"), "mean of the weights at the last 2 evaluations")}

    excludes = {"ema": "--average_evaluations does not combine with --ema_decay: both choose the weights to evaluate"}

    def enabled(self, cfg: CheckpointAverageConfig) -> bool:
        return cfg.average_evaluations > 1

    def callback(self, cfg: CheckpointAverageConfig, model, seed: int = 0) -> Optional[Callback]:
        return CheckpointAverageCallback(model, cfg.average_evaluations) if cfg.average_evaluations > 1 else None
