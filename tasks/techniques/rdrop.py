"""R-Drop (Liang et al., NeurIPS 2021), as a wrapper around any task's processor.

Each training batch goes through the model twice in training mode, so the two passes draw different
dropout masks; the loss is the task loss of both passes plus α times their disagreement:

    L = ½ (L_task(out₁) + L_task(out₂)) + α · D(out₁, out₂)

D is the symmetric KL ½ (KL(P₁‖P₂) + KL(P₂‖P₁)) of the two predictive distributions: the softmax of the
sentiment logits, the Bernoulli σ(z) of each paraphrase logit; for a regression output (STS) there is no
distribution and D is the MSE between the two outputs (tasks/domain/losses.py, `rdrop_consistency`). D is a mean
over the batch's examples (the paper's code sums over them), so α does not grow with the batch size.
Cost: a second forward and backward of every batch, about twice the step time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch

from ..domain.losses import rdrop_consistency
from ..engine.config import flag
from .base import ProcessorWrapper, Technique


@dataclass(frozen=True)
class RDropConfig:
    rdrop_alpha: float = flag(0.0, "R-Drop: each batch twice (two dropout masks), the task loss of both plus α · "
                                   "the symmetric KL between the two predictions (MSE for STS); 0: off")

    def __post_init__(self):
        if self.rdrop_alpha < 0:
            raise ValueError(f"--rdrop_alpha must be >= 0, got {self.rdrop_alpha}")


def rdrop_loss(task_1: torch.Tensor, task_2: torch.Tensor, consistency: torch.Tensor, alpha: float) -> torch.Tensor:
    """½ (L₁ + L₂) + α · D."""
    return 0.5 * (task_1 + task_2) + alpha * consistency


class RDropProcessor(ProcessorWrapper):
    """Same batches, R-Drop's loss instead of the task loss."""

    def __init__(self, base, alpha: float):
        super().__init__(base)
        if not (hasattr(base, "train_outputs") and hasattr(base, "loss_from_outputs")):
            raise ValueError(f"R-Drop needs a task processor that exposes its outputs; got {type(base).__name__} "
                             "(it does not combine with --adversarial)")
        if alpha < 0:
            raise ValueError(f"rdrop_alpha must be >= 0, got {alpha}")
        self.alpha = alpha
        self.last_terms = None  # (task loss 1, task loss 2, D) of the last batch, for inspection and tests

    def loss(self, model, batch) -> torch.Tensor:
        out_1 = self.base.train_outputs(model, batch)
        out_2 = self.base.train_outputs(model, batch)  # the model is in training mode: other dropout masks
        task_1, task_2 = self.base.loss_from_outputs(out_1, batch), self.base.loss_from_outputs(out_2, batch)
        consistency = rdrop_consistency(out_1.float(), out_2.float(), self.base.output_kind)
        self.last_terms = (task_1.detach(), task_2.detach(), consistency.detach())
        return rdrop_loss(task_1, task_2, consistency, self.alpha)


class RDropTechnique(Technique):
    name, summary, Config = "rdrop", "R-Drop: consistency between two dropout passes (Liang et al. 2021)", RDropConfig
    clis = ("multitask", "classifier")
    arms = {"rdrop": (("--rdrop_alpha", "1.0"), "R-Drop (α = 1)")}

    excludes = {"adversarial": "--rdrop_alpha does not combine with --adversarial: both replace the task loss"}

    def enabled(self, cfg: RDropConfig) -> bool:
        return cfg.rdrop_alpha > 0

    def wrap_processors(self, cfg: RDropConfig, model, processors: Dict[str, object]) -> Dict[str, object]:
        if cfg.rdrop_alpha == 0:
            return processors
        return {name: RDropProcessor(proc, cfg.rdrop_alpha) for name, proc in processors.items()}
