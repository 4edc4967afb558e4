"""Which task each batch of an epoch comes from, and each task's batches as an endless stream.

Both are deterministic in (seed, epoch), which is what lets a run resume mid-epoch at the exact batch:
the schedule is recomputed, and each stream is advanced past the batches it had already given.
"""
from __future__ import annotations

import itertools
import random
from typing import Dict, List

SAMPLINGS = ("proportional", "round_robin", "annealed")


def task_schedule(num_batches: Dict[str, int], strategy: str, tasks_per_step: int, epoch: int, epochs: int,
                  seed: int) -> List[List[str]]:
    """The epoch's steps, each a list of task names (one batch each). Pure: same inputs, same schedule.

    proportional: every task's data once, batches shuffled together (a task's share ∝ its size);
    round_robin: tasks take turns, each an equal share (small tasks repeat, large ones are subsampled);
    annealed: each batch's task drawn with p ∝ size^α, α from 1 to 0.2 over the epochs (Stickland & Murray 2019).
    The epoch has sum(num_batches) batches in every case.
    """
    names, total = list(num_batches), sum(num_batches.values())
    rng = random.Random(seed * 7919 + epoch)
    if strategy == "proportional":
        seq = [name for name in names for _ in range(num_batches[name])]
        rng.shuffle(seq)
    elif strategy == "round_robin":
        seq = [names[i % len(names)] for i in range(total)]
    elif strategy == "annealed":
        alpha = 1.0 - 0.8 * epoch / max(1, epochs - 1)
        seq = rng.choices(names, weights=[num_batches[n] ** alpha for n in names], k=total)
    else:
        raise ValueError(f"task sampling must be one of {SAMPLINGS}, got {strategy!r}")
    k = tasks_per_step or len(names)
    return [seq[i:i + k] for i in range(0, len(seq), k)]


class TaskStream:
    """A task's batches as an endless stream: a fresh shuffled pass each time one runs out.

    Under DDP, rank r of N keeps batches r, r + N, r + 2N, ... of each pass (every rank draws the same pass).
    `taken` counts the batches given this epoch; `skip(n)` replays n of them, which is how a resumed run
    reaches the batch it stopped at (random state is restored after the replay, so replaying costs only time).
    """

    def __init__(self, processor, epoch: int, rank: int = 0, world_size: int = 1):
        self.processor, self.epoch, self.passes, self.taken = processor, epoch, 0, 0
        self.rank, self.world_size = rank, world_size
        self.it = self._pass()

    def _pass(self):
        return itertools.islice(self.processor.batches(self.epoch * 1000 + self.passes), self.rank, None, self.world_size)

    def __next__(self):
        self.taken += 1
        try:
            return next(self.it)
        except StopIteration:
            self.passes += 1
            self.it = self._pass()
            try:
                return next(self.it)
            except StopIteration:
                raise ValueError(f"rank {self.rank} got no batch of a pass: the task has fewer batches than the "
                                 f"{self.world_size} processes") from None

    def skip(self, n: int) -> None:
        for _ in range(n):
            next(self)
