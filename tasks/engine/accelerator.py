"""Where and how training runs, in one object: the device, the precision, torch.compile and, under torchrun,
the processes (DDP). The Trainer asks it and has no branch of its own for any of them.

    acc = Accelerator(use_gpu=True, mixed_precision=True)
    model = acc.prepare(model, loss_fn)          # to the device, compiled, wrapped in DDP when there are ranks
    loss = acc.loss(loss_fn, name, batch, sync)  # the forward on the device, under autocast, through DDP
    acc.mean({...}); acc.broadcast(obj); acc.barrier(); acc.is_main

One process is the plain case: rank 0 of 1, every reduction the identity (tasks/engine/distributed.py has
how ranks share the batches).
"""
from __future__ import annotations

import contextlib
import random
from typing import Callable, Dict, Iterable

import numpy as np
import torch

from .devices import Precision, compile_layers, pick_device, to_device
from .distributed import average_gradients, broadcast_from_main, init_distributed, mean_over_ranks, wrap_ddp

# After --resume under DDP each rank needs its own random stream again (the checkpoint holds rank 0's): seeded by
# seed + rank + RESEED_STRIDE · step, a prime stride so that no (rank, step) pair of a run repeats another's seed.
RESEED_STRIDE = 7919


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Accelerator:
    def __init__(self, use_gpu: bool = False, mixed_precision: bool = True, compile: bool = False):
        self.rank, self.world_size, self.local_rank = init_distributed(use_gpu)
        self.is_main = self.rank == 0  # the one process that evaluates, prints and writes files
        self.device = pick_device(use_gpu)
        if self.device.type == "cuda" and self.world_size > 1:
            self.device = torch.device("cuda", self.local_rank)
        self.precision = Precision(self.device, mixed_precision)
        self.compile, self.ddp = compile, None

    def prepare(self, model: torch.nn.Module, loss_fn: Callable, through_ddp: bool = True) -> torch.nn.Module:
        """The model on the device, its layers compiled if asked; with several ranks, `loss_fn(name, batch)`
        wrapped in DDP (unless the caller averages its gradients itself: through_ddp=False)."""
        model.to(self.device)
        if self.compile:
            compile_layers(model)
        if self.world_size > 1 and through_ddp:
            self.ddp = wrap_ddp(model, loss_fn, self.device, self.local_rank)
        return model

    def shard(self, num_batches: int) -> int:
        """This process's share of an epoch's batches (every world_size-th)."""
        return -(-num_batches // self.world_size)

    def to_device(self, batch: dict) -> dict:
        return to_device(batch, self.device)

    def loss(self, loss_fn: Callable, name: str, batch: dict, sync: bool = True, local: bool = False) -> torch.Tensor:
        """loss_fn(name, batch) in float32, the forward under autocast; under DDP through the wrapper, whose
        backward averages the gradients over the ranks when `sync` (once per step, in its last backward).
        `local`: this process's loss alone, never through DDP (a pass over the data outside the steps)."""
        batch = self.to_device(batch)
        if self.ddp is None or local:
            with self.precision.autocast():
                return loss_fn(name, batch).float()
        with self.precision.autocast(), (contextlib.nullcontext() if sync else self.ddp.no_sync()):
            return self.ddp(name, batch).float()

    def average_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """For gradients DDP's hooks did not see (torch.autograd.grad): their mean over the ranks."""
        average_gradients(params, self.world_size)

    def mean(self, values: Dict[str, float]) -> Dict[str, float]:
        return mean_over_ranks(values, self.world_size, self.device)

    def broadcast(self, obj):
        """Rank 0's obj on every rank."""
        return broadcast_from_main(obj, self.world_size)

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def seed(self, seed: int) -> None:
        """The same initialisation on every rank (already made), its own dropout per rank."""
        seed_everything(seed + self.rank)

    def reseed_after_resume(self, seed: int, step: int) -> None:
        if self.world_size > 1:
            seed_everything(seed + self.rank + RESEED_STRIDE * step)
