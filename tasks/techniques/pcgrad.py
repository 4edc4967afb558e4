"""PCGrad (Yu et al., NeurIPS 2020) as a technique: the step's per-task gradients on the shared encoder are
projected off each other where they conflict (optim/pcgrad.py has the math and its tests).

The task minibatch of Algorithm 1 is the step's tasks: under the default proportional sampling a step of three
batches holds one, two or three distinct tasks, and PCGrad projects between those present. Each evaluation's
record in metrics.jsonl gets, under "pcgrad", how many steps held how many tasks and, per pair of tasks, the
steps they shared, the share of those whose gradients conflicted (cosine < 0), the mean cosine and the mean
cosine where they conflicted (tasks/plot_metrics.py draws the share).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Dict, List

import torch
import torch.distributed as dist

from optim import PCGrad
from optim.pcgrad import pairwise_cosines, pcgrad as pcgrad_direction

from ..engine.param_groups import encoder_parameters
from ..engine.callbacks import Callback
from ..engine.config import flag
from .base import Technique


@dataclass(frozen=True)
class PCGradConfig:
    pcgrad: bool = flag(False, "project conflicting task gradients on the shared encoder (PCGrad, Yu et al. 2020)")


class PCGradCallback(Callback):
    def __init__(self, shared: List[torch.nn.Parameter], seed: int):
        self.shared, self.generator = shared, torch.Generator().manual_seed(seed)
        self.steps_by_tasks: Dict[str, int] = {}  # since the last evaluation: "k" -> steps that held k tasks
        # "a/b" -> [steps they shared, conflicting ones, Σ cosine, Σ of its negative part]
        self.pairs: Dict[str, list] = {}

    def combine_losses(self, trainer, losses: Dict[str, torch.Tensor]) -> None:
        if trainer.world_size > 1:
            cosines = self._distributed(trainer, list(losses.values()))
        else:  # one backward per task, then the projection; heads get their summed gradients
            pc = PCGrad(trainer.optimizer, self.shared, generator=self.generator)
            pc.backward(list(losses.values()))
            cosines = pc.last_cosines
        self._count(list(losses), cosines)

    def _count(self, names: List[str], cosines: torch.Tensor) -> None:
        k = str(len(names))
        self.steps_by_tasks[k] = self.steps_by_tasks.get(k, 0) + 1
        cos = cosines.tolist()  # one device-to-host copy a step, not one per pair
        for i, j in combinations(range(len(names)), 2):
            c = cos[i][j]
            entry = self.pairs.setdefault("/".join(sorted((names[i], names[j]))), [0, 0, 0.0, 0.0])
            n, bad, total, negative = entry
            entry[:] = [n + 1, bad + (c < 0), total + c, negative + min(c, 0.0)]

    def on_evaluate(self, trainer) -> dict:
        """What the surgery met since the last evaluation (then reset): steps by their number of distinct tasks,
        and per pair of tasks the steps they shared, the share that conflicted, the mean cosine, and the mean
        cosine of the conflicting steps (what a projection removes: |cos| of the projected gradient's norm)."""
        pairs = {k: {"steps": n, "conflicting": round(bad / n, 4), "mean_cosine": round(total / n, 4),
                     "mean_conflicting_cosine": round(negative / bad, 4) if bad else 0.0}
                 for k, (n, bad, total, negative) in sorted(self.pairs.items())}
        out = {"pcgrad": {"steps_by_tasks": dict(sorted(self.steps_by_tasks.items())), "pairs": pairs}}
        self.steps_by_tasks, self.pairs = {}, {}
        return out

    def _distributed(self, trainer, losses: List[torch.Tensor]) -> torch.Tensor:
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
        task_grads = flat[:len(rows) * dims].view(len(rows), dims)
        direction = pcgrad_direction(task_grads, "sum", self.generator)
        for params, values in ((shared, direction), (heads, flat[len(rows) * dims:])):
            offset = 0
            for p in params:
                p.grad = values[offset:offset + p.numel()].view_as(p).clone()
                offset += p.numel()
        return pairwise_cosines(task_grads)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "steps_by_tasks": self.steps_by_tasks, "pairs": self.pairs}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])  # a checkpoint from before the counts starts them at 0
        self.steps_by_tasks = dict(state.get("steps_by_tasks", {}))
        self.pairs = {k: list(v) for k, v in state.get("pairs", {}).items()}


class PCGradTechnique(Technique):
    name, summary, Config = "pcgrad", "PCGrad gradient surgery between tasks", PCGradConfig
    clis = ("multitask", "classifier")
    arms = {"pcgrad": (("--pcgrad",), "PCGrad")}

    def enabled(self, cfg: PCGradConfig) -> bool:
        return cfg.pcgrad

    def callback(self, cfg: PCGradConfig, model, seed: int = 0):
        if not cfg.pcgrad:
            return None
        shared = [p for p in encoder_parameters(model) if p.requires_grad]
        return PCGradCallback(shared, seed) if shared else None
