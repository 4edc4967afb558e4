"""Several processes: `torchrun --nproc_per_node N tasks/multitask.py ...` (gloo on the CPU, nccl on GPUs).

Every rank follows the same task schedule, and of each task's shuffled batches rank r takes batches r, r + N,
r + 2N, ... (tasks/engine/sampling.py), so an epoch has 1/N as many steps, each on N batches per task at once;
gradients are averaged over the ranks, so the step is the one a single process would take on the N batches
combined. Rank 0 alone evaluates, prints, shows progress and writes files.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, Tuple

import torch
import torch.distributed as dist


def init_distributed(use_gpu: bool = False) -> Tuple[int, int, int]:
    """(rank, world size, local rank). Under torchrun (WORLD_SIZE > 1) the process group is started here from its
    environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT): nccl when training on GPUs, else
    gloo. A plain run is (0, 1, 0)."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local_rank
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return 0, 1, 0
    cuda = use_gpu and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank


def leave_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class TaskLoss(torch.nn.Module):
    """forward(name, batch) = the task's weighted loss. DistributedDataParallel synchronises the gradients of
    what runs through forward, and processors call the model's own methods, so DDP wraps this."""

    def __init__(self, model: torch.nn.Module, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, name: str, batch: dict) -> torch.Tensor:
        return self.loss_fn(name, batch)


def wrap_ddp(model: torch.nn.Module, loss_fn, device: torch.device, local_rank: int):
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(TaskLoss(model, loss_fn), device_ids=[local_rank] if device.type == "cuda" else None,
                                   find_unused_parameters=True)  # a step's tasks use some heads only


def mean_over_ranks(values: Dict[str, float], world_size: int, device) -> Dict[str, float]:
    if world_size == 1:
        return values
    t = torch.tensor([values[n] for n in sorted(values)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {n: v / world_size for n, v in zip(sorted(values), t.tolist())}


def average_gradients(params: Iterable[torch.Tensor], world_size: int) -> None:
    """Average .grad over the ranks in one all-reduce (for steps DDP's hooks do not see, e.g. autograd.grad)."""
    params = [p for p in params if p.grad is not None]
    if world_size == 1 or not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def broadcast_from_main(obj, world_size: int):
    """Rank 0's value of obj on every rank."""
    if world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
