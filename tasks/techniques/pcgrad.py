"""PCGrad (Yu et al., NeurIPS 2020) as a technique: the step's per-task gradients on the shared encoder are
projected off each other where they conflict (optim/pcgrad.py has the math and its tests)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.distributed as dist

from optim import PCGrad
from optim.pcgrad import pcgrad as pcgrad_direction

from ..param_groups import encoder_parameters
from .base import Callback, Technique, flag


@dataclass(frozen=True)
class PCGradConfig:
    pcgrad: bool = flag(False, "project conflicting task gradients on the shared encoder (PCGrad, Yu et al. 2020)")


class PCGradCallback(Callback):
    combines_task_losses = True

    def __init__(self, shared: List[torch.nn.Parameter], seed: int):
        self.shared, self.generator = shared, torch.Generator().manual_seed(seed)

    def backward(self, trainer, losses: Dict[str, torch.Tensor]) -> bool:
        if trainer.world_size > 1:
            self._distributed(trainer, list(losses.values()))
        else:  # one backward per task, then the projection; heads get their summed gradients
            PCGrad(trainer.optimizer, self.shared, generator=self.generator).backward(list(losses.values()))
        return True

    def _distributed(self, trainer, losses: List[torch.Tensor]) -> None:
        """Under DDP: per task, a local backward; one all-reduce then averages the [tasks, dims] matrix of task
        gradients (and the heads' summed gradients) over the ranks; only then the projection, identical on every
        rank (projecting per rank and averaging afterwards would not be PCGrad: the projection is not linear)."""
        shared, ids = self.shared, {id(p) for p in self.shared}
        rows = []
        for loss in losses:
            loss.backward()  # forwards ran under no_sync: local gradients only
            rows.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in shared]))
            for p in shared:
                p.grad = None
        # the heads the step's tasks reached (the same on every rank: every rank runs the same tasks)
        heads = [p for p in trainer.model.parameters() if p.grad is not None and id(p) not in ids]
        flat = torch.cat([torch.stack(rows).reshape(-1)] + [p.grad.reshape(-1) for p in heads])
        dist.all_reduce(flat)
        flat /= trainer.world_size
        dims = rows[0].numel()
        direction = pcgrad_direction(flat[:len(rows) * dims].view(len(rows), dims), "sum", self.generator)
        for params, values in ((shared, direction), (heads, flat[len(rows) * dims:])):
            offset = 0
            for p in params:
                p.grad = values[offset:offset + p.numel()].view_as(p).clone()
                offset += p.numel()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class PCGradTechnique(Technique):
    name, summary, Config = "pcgrad", "PCGrad gradient surgery between tasks", PCGradConfig
    clis = ("multitask", "classifier")
    arms = {"pcgrad": (("--pcgrad",), "PCGrad")}

    def callback(self, cfg: PCGradConfig, model, seed: int = 0):
        if not cfg.pcgrad:
            return None
        shared = [p for p in encoder_parameters(model) if p.requires_grad]
        return PCGradCallback(shared, seed) if shared else None
