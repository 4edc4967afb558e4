"""Gradient surgery for multi-task learning: PCGrad (Yu et al., "Gradient Surgery for Multi-Task Learning",
NeurIPS 2020, Algorithm 1).

When two tasks' gradients conflict (gᵢ·gⱼ < 0), following their sum moves one task uphill. PCGrad removes
from each task's gradient its component along every conflicting other gradient, one at a time:

    for each task i:                    gᵢᴾᶜ = gᵢ
        for j ≠ i, in a fresh random order:
            if gᵢᴾᶜ·gⱼ < 0:             gᵢᴾᶜ ← gᵢᴾᶜ − (gᵢᴾᶜ·gⱼ / ‖gⱼ‖²)·gⱼ      (gⱼ: the original, unprojected)
    update direction                    Σᵢ gᵢᴾᶜ   (the paper's choice)  or its mean

For two tasks this has a closed form, g₁ − (g₁·g₂/‖g₂‖²)·g₂ + g₂ − (g₁·g₂/‖g₁‖²)·g₁ when they conflict, whose
dot product with each original is ≥ 0 (Cauchy–Schwarz). A zero gradient has zero dot product with
everything, so it is never projected onto (no division by ‖0‖²).
"""
from __future__ import annotations

from typing import Iterable, Iterator, List, Optional, Sequence, Union

import torch

REDUCTIONS = ("sum", "mean")


def _as_matrix(grads: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
    """Per-task gradients as one [tasks, dims] tensor, checking their shapes."""
    if isinstance(grads, torch.Tensor):
        if grads.ndim != 2 or grads.shape[0] == 0:
            raise ValueError(f"grads must be a [tasks, dims] tensor with at least one task, got shape "
                             f"{tuple(grads.shape)}")
        return grads
    grads = list(grads)
    if not grads:
        raise ValueError("grads is empty: pcgrad needs at least one task's gradient")
    if any(g.ndim != 1 or g.shape != grads[0].shape for g in grads):
        raise ValueError(f"grads must be flattened 1-D tensors of one length, got shapes "
                         f"{[tuple(g.shape) for g in grads]}")
    return torch.stack(grads)


# exercise: pcgrad — Yield each gᵢ less its part along each conflicting gⱼ. hint: randperm(T − 1, generator=generator)
def _projected_rows(G: torch.Tensor, generator: Optional[torch.Generator]) -> Iterator[torch.Tensor]:
    """Yield gᵢᴾᶜ for i = 0, 1, ... one at a time, so that only one projected row exists at once."""
    T = G.shape[0]
    sq_norms = [torch.dot(G[j], G[j]).item() for j in range(T)]  # ‖gⱼ‖², without a [tasks, dims] temporary
    for i in range(T):
        others = [j for j in range(T) if j != i]
        order = torch.randperm(T - 1, generator=generator).tolist() if T > 1 else []
        g = G[i].clone()
        for k in order:
            j = others[k]
            dot = torch.dot(g, G[j]).item()
            if dot < 0 and sq_norms[j] > 0:
                g.add_(G[j], alpha=-dot / sq_norms[j])  # in place: no temporary of size dims
        yield g


def project_conflicting(grads: Union[torch.Tensor, Sequence[torch.Tensor]],
                        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Each task's gradient after PCGrad's projections, as a new [tasks, dims] tensor (the input is not changed).

    The order of the other tasks is torch.randperm(tasks − 1, generator=generator), drawn afresh for each i
    in turn, so a seeded generator makes the result reproducible.
    """
    return torch.stack(list(_projected_rows(_as_matrix(grads), generator)))


def pairwise_cosines(grads: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
    """cos(gᵢ, gⱼ) for every pair of tasks, as a [tasks, tasks] tensor; 0 where either gradient is zero.

    The paper's measure of interference: a pair conflicts where its cosine is < 0, which is exactly when PCGrad
    projects (the sign of gᵢ·gⱼ). Computed from the Gram matrix G·Gᵀ, so no [tasks, dims] temporary is made.
    """
    G = _as_matrix(grads)
    gram = (G @ G.T).double()  # [tasks, tasks]
    norms = gram.diagonal().clamp(min=0).sqrt()
    denom = norms[:, None] * norms[None, :]
    return torch.where(denom > 0, gram / denom.clamp(min=1e-300), torch.zeros_like(gram))


def pcgrad(grads: Union[torch.Tensor, Sequence[torch.Tensor]], reduction: str = "sum",
           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The PCGrad update direction from flattened per-task gradients: the sum (or mean) of the projected ones.

    grads: a [tasks, dims] tensor or a list of 1-D tensors of one length. Returns a new [dims] tensor. Draws
    the same random orders as project_conflicting, and sums the rows as they are made (memory: one row).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"Invalid reduction: {reduction!r} (must be one of {REDUCTIONS})")
    G = _as_matrix(grads)
    total = torch.zeros_like(G[0])
    for g in _projected_rows(G, generator):
        total += g
    return total if reduction == "sum" else total / G.shape[0]


class PCGrad:
    """Wraps any torch optimizer: `backward(losses)` writes the PCGrad direction into the shared parameters'
    `.grad`; `step()` and `zero_grad()` are the optimizer's.

        pc = PCGrad(optimizer, shared_params=model.encoder.parameters())
        pc.zero_grad(); pc.backward([loss_sst, loss_para, loss_sts]); pc.step()

    One backward per task. Each task's gradient of the shared parameters is flattened into row i of a
    [tasks, dims] buffer; the parameters outside `shared_params` (task heads) simply accumulate their own
    gradients from the losses that reach them, untouched by the surgery. Gradients already in `.grad` before
    the call (e.g. gradient accumulation) are kept and the PCGrad direction is added to them.

    Memory, beyond a plain backward: one flattened copy of the shared parameters per task (the [tasks, dims]
    buffer) plus one row being projected. For all-MiniLM-L6-v2 (22.7M parameters, 86.6 MiB in float32) and
    three tasks: 4 × 86.6 = 347 MiB; benchmarks/pcgrad_memory.py measured 348 MiB of extra peak RSS.

    After each `backward`, `last_cosines` holds the [tasks, tasks] cosines of the task gradients it projected
    (pairwise_cosines, before the projection): what tells how often, and how much, the tasks conflicted.

    shared_params: default, every parameter of the optimizer (the reference implementation's choice; a
    head's gradient is then zero for the other tasks). retain_graph: pass True when the losses share a forward
    graph (one batch, several heads); with one batch per task the graphs are separate and it is not needed.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, shared_params: Optional[Iterable[torch.Tensor]] = None,
                 reduction: str = "sum", generator: Optional[torch.Generator] = None):
        if reduction not in REDUCTIONS:
            raise ValueError(f"Invalid reduction: {reduction!r} (must be one of {REDUCTIONS})")
        self.optimizer = optimizer
        self.reduction = reduction
        self.generator = generator
        if shared_params is None:
            shared_params = [p for g in optimizer.param_groups for p in g["params"]]
        # Each parameter once (a tied weight listed twice would otherwise count twice).
        self.shared_params: List[torch.Tensor] = list(dict.fromkeys(p for p in shared_params if p.requires_grad))
        if not self.shared_params:
            raise ValueError("shared_params has no parameter that requires grad")
        self.last_cosines: Optional[torch.Tensor] = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        return self.optimizer.step(closure)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict)

    def backward(self, losses: Sequence[torch.Tensor], retain_graph: bool = False) -> None:
        """Backpropagate each task's loss, project the shared gradients, and write the result into `.grad`."""
        losses = list(losses)
        if not losses:
            raise ValueError("losses is empty: PCGrad.backward needs one loss per task")
        shared = self.shared_params
        kept = [p.grad for p in shared]  # gradients from before this call, added back at the end
        dims = sum(p.numel() for p in shared)
        ref = shared[0]
        task_grads = torch.zeros(len(losses), dims, dtype=ref.dtype, device=ref.device)
        for p in shared:
            p.grad = None
        for i, loss in enumerate(losses):
            loss.backward(retain_graph=retain_graph and i < len(losses) - 1)
            offset = 0
            for p in shared:  # move the task's gradient into row i; a parameter it does not reach keeps 0
                if p.grad is not None:
                    task_grads[i, offset:offset + p.numel()] = p.grad.reshape(-1)
                    p.grad = None
                offset += p.numel()
        self.last_cosines = pairwise_cosines(task_grads)
        direction = pcgrad(task_grads, self.reduction, self.generator)
        del task_grads
        offset = 0
        for p, old in zip(shared, kept):  # the new .grad tensors are views into `direction`: no extra copy
            g = direction[offset:offset + p.numel()].view_as(p)
            p.grad = g if old is None else old.add_(g)
            offset += p.numel()
