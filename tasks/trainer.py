"""The one training loop, shared by every CLI (multitask, single-task sentiment, and later phases).

It is model-agnostic, in the manner of minGPT's Trainer: it is given a model, a dict of "processors"
(anything with `num_batches()`, `batches(epoch)` and `loss(model, batch)`, see tasks/processors.py) and an
`evaluate(model) -> {"score": ..., ...}` callback. It owns everything else: device and bf16 autocast,
the task schedule, gradient surgery, Child-Tuning masks, clipping, our AdamW with warmup + decay, seeding,
progress bars, per-epoch evaluation, the best checkpoint, `--resume`, and a metrics file to plot.

One epoch is a schedule of batches, one task per batch (`task_schedule`); consecutive batches are grouped
into steps of `tasks_per_step` (default: as many as there are tasks), whose losses are summed — or, with
`pcgrad`, combined by gradient surgery per task — into one optimizer step.

More than one process: `torchrun --nproc_per_node N tasks/multitask.py ...` runs the same loop in N processes
with DistributedDataParallel (gloo on the CPU, nccl on GPUs). Every rank follows the same task schedule, and
of each task's shuffled batches rank r takes batches r, r + N, r + 2N, ... (so an epoch has 1/N as many steps,
each on N batches per task at once); gradients are averaged over the ranks, so the step is the one a single
process would take on the N batches combined. Rank 0 alone evaluates, prints, shows progress and writes files.
Gradient surgery under DDP: each task's gradient is computed without synchronising (`no_sync`), the
[tasks, dims] matrix of per-task gradients is averaged over the ranks in one all-reduce, and only then
projected, so every rank projects exactly what one process would project for the combined batch (projecting
per rank and averaging afterwards would not be PCGrad: the projection is not linear).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from optim import AdamW, PCGrad, is_no_decay, make_child_tuning, make_scheduler
from optim.pcgrad import pcgrad as pcgrad_direction

from .processors import to_device

SAMPLINGS = ("proportional", "round_robin", "annealed")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    lr: float = 5e-5
    head_lr: Optional[float] = None  # None: same as lr
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    schedule: str = "linear"  # constant | linear | cosine
    max_grad_norm: float = 1.0
    seed: int = 11711
    use_gpu: bool = False
    bf16: bool = True  # autocast to bfloat16 on CUDA
    task_sampling: str = "proportional"
    tasks_per_step: int = 0  # 0: one batch of as many tasks as there are
    pcgrad: bool = False
    child_tuning: str = "none"  # none | F | D
    child_tuning_p: float = 0.3
    child_tuning_fisher_batches: int = 64
    out_dir: str = "runs/multitask"
    resume: bool = False
    compile: bool = False  # torch.compile the encoder's layers (falls back to eager, with a warning)
    ema_decay: float = 0.0  # > 0: evaluate, keep and predict with an exponential moving average of the weights

    def __post_init__(self):
        if self.task_sampling not in SAMPLINGS:
            raise ValueError(f"task_sampling must be one of {SAMPLINGS}, got {self.task_sampling!r}")
        if self.epochs < 1 or self.lr <= 0 or self.tasks_per_step < 0:
            raise ValueError("epochs must be >= 1, lr > 0 and tasks_per_step >= 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0: off), got {self.ema_decay}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def compile_layers(model: torch.nn.Module, backend: str = "inductor") -> bool:
    """torch.compile each encoder layer in place (regional compilation: the repeated block is compiled once
    and reused, whatever method of the model the processors call). Returns False, with a warning, where
    torch.compile is unavailable; errors at the first compiled call fall back to eager too."""
    from minibert.model import Layer
    layers = [m for m in model.modules() if isinstance(m, Layer)]
    try:
        if not layers:
            raise RuntimeError("the model has no minibert encoder layers to compile")
        if not hasattr(torch, "compile") or not hasattr(torch.nn.Module, "compile"):
            raise RuntimeError(f"torch {torch.__version__} has no torch.compile / nn.Module.compile")
        if backend == "inductor" and next(model.parameters()).device.type == "cpu" \
                and shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("c++") is None:
            raise RuntimeError("torch.compile on the CPU needs a C++ compiler (g++ / c++) on the PATH")
        import torch._dynamo as dynamo
        dynamo.config.suppress_errors = True  # a failure when a graph is compiled: run that code eagerly
        for layer in layers:
            layer.compile(backend=backend)
        return True
    except Exception as err:  # noqa: BLE001  (whatever the reason, say it and train uncompiled)
        warnings.warn(f"--compile: torch.compile is unavailable here ({err}); training without it")
        return False


def pick_device(use_gpu: bool) -> torch.device:
    if use_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    if use_gpu:
        warnings.warn("--use_gpu was given but CUDA is not available: training on the CPU")
    return torch.device("cpu")


def param_groups(model: torch.nn.Module, lr: float, head_lr: Optional[float], weight_decay: float) -> List[dict]:
    """Encoder (`bert.*`) at lr, everything else (heads) at head_lr; no decay for biases and LayerNorms."""
    groups: Dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        rate = lr if name.startswith("bert.") or head_lr is None else head_lr
        decay = 0.0 if is_no_decay(name, p) else weight_decay
        groups.setdefault((rate, decay), {"params": [], "lr": rate, "weight_decay": decay})["params"].append(p)
    return list(groups.values())


class _Cycle:
    """A task's batches as an endless stream: a fresh shuffled pass each time one runs out.

    Under DDP, rank r of N keeps batches r, r + N, r + 2N, ... of each pass (every rank draws the same pass).
    """

    def __init__(self, processor, epoch: int, rank: int = 0, world_size: int = 1):
        self.processor, self.epoch, self.passes = processor, epoch, 0
        self.rank, self.world_size = rank, world_size
        self.it = self._pass()

    def _pass(self):
        return itertools.islice(self.processor.batches(self.epoch * 1000 + self.passes), self.rank, None, self.world_size)

    def __next__(self):
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


def loss_weight(processor) -> float:
    """The processor's `loss_weight`, 1 if it has none: tasks' losses live on different scales (STS's MSE on the
    0–1 scale is ~0.03 where cross-entropy is ~1), and a summed step follows the largest."""
    return getattr(processor, "loss_weight", 1.0)


def weighted_loss(processor, model: torch.nn.Module, batch: dict) -> torch.Tensor:
    return loss_weight(processor) * processor.loss(model, batch)


class _TaskLoss(torch.nn.Module):
    """forward(name, batch) = the task's loss: DistributedDataParallel synchronises gradients of what runs
    through forward, and processors call the model's own methods, so DDP wraps this."""

    def __init__(self, model: torch.nn.Module, processors: Dict[str, object]):
        super().__init__()
        self.model, self.processors = model, processors

    def forward(self, name: str, batch: dict) -> torch.Tensor:
        return weighted_loss(self.processors[name], self.model, batch)


class Trainer:
    def __init__(self, model: torch.nn.Module, processors: Dict[str, object], config: TrainConfig,
                 evaluate: Callable[[torch.nn.Module], Dict[str, float]], checkpoint_meta: Optional[dict] = None,
                 show_progress: bool = True):
        self.model, self.processors, self.config = model, dict(processors), config
        self.evaluate, self.meta = evaluate, checkpoint_meta or {}
        self.rank, self.world_size, local_rank = init_distributed(config.use_gpu)
        self.is_main = self.rank == 0  # the one process that evaluates, prints and writes files
        self.show_progress = show_progress and self.is_main
        self.device = pick_device(config.use_gpu)
        if self.device.type == "cuda" and self.world_size > 1:
            self.device = torch.device("cuda", local_rank)
        self.model.to(self.device)
        # --ema_decay: a copy whose weights follow w_ema ← d·w_ema + (1 − d)·w after every step. It is what is
        # evaluated, saved as best.pt and predicted with: the average of the last ~1/(1 − d) steps' weights,
        # smoother than any single one of them (torch.optim.swa_utils; the copy stays eager)
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
                    if config.ema_decay > 0 else None)
        if config.compile:
            compile_layers(self.model)
        self.ddp = None  # the DistributedDataParallel wrapper of the loss, when there is more than one process
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.ddp = DistributedDataParallel(_TaskLoss(self.model, self.processors),
                                               device_ids=[local_rank] if self.device.type == "cuda" else None,
                                               find_unused_parameters=True)  # a step's tasks use some heads only
        self.out_dir = Path(config.out_dir)
        self.history: List[dict] = []
        self.best_score = -math.inf
        self.start_epoch = 0
        self.optimizer = AdamW(param_groups(model, config.lr, config.head_lr, config.weight_decay), lr=config.lr)
        self.steps_per_epoch = len(task_schedule(self._num_batches(), config.task_sampling, config.tasks_per_step,
                                                 0, config.epochs, config.seed))
        total = self.steps_per_epoch * config.epochs
        self.scheduler = make_scheduler(self.optimizer, config.schedule, int(config.warmup_ratio * total), total)
        shared = [p for n, p in model.named_parameters() if n.startswith("bert.") and p.requires_grad]
        self.surgery = (PCGrad(self.optimizer, shared, generator=torch.Generator().manual_seed(config.seed))
                        if config.pcgrad and shared else None)
        self.child = None  # built at the start of fit (Child-Tuning-D needs a pass over the data)

    def _num_batches(self) -> Dict[str, int]:
        """Each task's batches per epoch in this process (under DDP, its share: every world_size-th batch)."""
        return {n: -(-p.num_batches() // self.world_size) for n, p in self.processors.items()}

    # ---- one optimizer step ------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda" and self.config.bf16)

    def _loss(self, name: str, batch) -> torch.Tensor:
        with self._autocast():
            return weighted_loss(self.processors[name], self.model, to_device(batch, self.device)).float()

    def _synced_loss(self, name: str, batch, sync: bool) -> torch.Tensor:
        """The loss through DDP (whose backward then averages the gradients over the ranks if `sync`)."""
        if self.ddp is None:
            return self._loss(name, batch)
        with self._autocast(), (contextlib.nullcontext() if sync else self.ddp.no_sync()):
            return self.ddp(name, to_device(batch, self.device)).float()

    def training_step(self, names: List[str], streams: Dict[str, _Cycle]) -> Dict[str, float]:
        """Forward and backward the step's batches, then clip and update. Returns each task's mean batch loss
        (unweighted: divided by the task's `loss_weight` again, so curves compare across weightings)."""
        losses: Dict[str, torch.Tensor] = {}  # per task: the sum over its batches in this step
        for i, name in enumerate(names):
            # under DDP, gradients are averaged over the ranks once per step, in the step's last backward
            loss = self._synced_loss(name, next(streams[name]), sync=self.surgery is None and i == len(names) - 1)
            if self.surgery is None:
                loss.backward()  # summed over the step's batches by accumulating gradients
                loss = loss.detach()
            losses[name] = losses[name] + loss if name in losses else loss
        if self.surgery is not None and self.ddp is not None:
            self._distributed_surgery(list(losses.values()))
        elif self.surgery is not None:
            self.surgery.backward(list(losses.values()))  # one backward per task, then projection
        if self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        if self.child is not None:  # after clipping, as the reference applies it inside the optimizer step
            self.child.apply(self.model)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {name: loss.item() / names.count(name) / loss_weight(self.processors[name])
                for name, loss in losses.items()}

    def _distributed_surgery(self, losses: List[torch.Tensor]) -> None:
        """PCGrad under DDP: per task, a local backward; then one all-reduce averages the [tasks, dims] matrix
        of the shared parameters' task gradients (and the heads' summed gradients) over the ranks; then the
        projection (optim.pcgrad.pcgrad, as PCGrad.backward does), identical on every rank."""
        shared = self.surgery.shared_params
        ids = {id(p) for p in shared}
        rows = []
        for loss in losses:
            loss.backward()  # forwards ran under no_sync: local gradients only
            rows.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in shared]))
            for p in shared:
                p.grad = None
        # the heads the step's tasks reached (the same on every rank: every rank runs the same tasks); the others
        # keep no gradient, as in one process
        heads = [p for p in self.model.parameters() if p.grad is not None and id(p) not in ids]
        flat = torch.cat([torch.stack(rows).reshape(-1)] + [p.grad.reshape(-1) for p in heads])
        dist.all_reduce(flat)
        flat /= self.world_size
        dims = rows[0].numel()
        direction = pcgrad_direction(flat[:len(rows) * dims].view(len(rows), dims), self.surgery.reduction,
                                     self.surgery.generator)
        for params, values in ((shared, direction), (heads, flat[len(rows) * dims:])):
            offset = 0
            for p in params:
                p.grad = values[offset:offset + p.numel()].view_as(p).clone()
                offset += p.numel()

    # ---- checkpoints -----------------------------------------------------------------------------------------
    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are evaluated and kept as best.pt: the moving average with --ema_decay, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def _state(self, epoch: int) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": epoch, "history": self.history,
                "best_score": self.best_score, "config": dataclasses.asdict(self.config), "meta": self.meta,
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                "pcgrad_rng": self.surgery.generator.get_state() if self.surgery else None,
                "child": self.child.state_dict() if self.child is not None else None}

    def _save_best(self, epoch: int, scores: Dict[str, float]) -> None:
        torch.save({"model": self.eval_model.state_dict(), "meta": self.meta, "config": dataclasses.asdict(self.config),
                    "epoch": epoch, "scores": scores}, self.out_dir / "best.pt")

    def _resume(self) -> None:
        path = self.out_dir / "last.pt"
        if not path.is_file():
            warnings.warn(f"--resume: no checkpoint at {path}; starting from scratch")
            return
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own file: holds RNG states
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.history, self.best_score, self.start_epoch = state["history"], state["best_score"], state["epoch"] + 1
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if self.surgery is not None and state["pcgrad_rng"] is not None:
            self.surgery.generator.set_state(state["pcgrad_rng"])
        if state.get("child") is not None and self.child is not None:
            self.child.load_state_dict(state["child"])
        if self.is_main:
            print(f"resumed from {path} after epoch {state['epoch'] + 1}")

    # ---- the loop --------------------------------------------------------------------------------------------
    def _build_child_tuning(self) -> None:
        cfg = self.config
        if cfg.child_tuning.lower() in ("", "none", "off"):
            return
        streams = {n: _Cycle(p, epoch=-1) for n, p in self.processors.items()}
        names = [n for step in task_schedule({n: p.num_batches() for n, p in self.processors.items()},
                                             "round_robin", 1, 0, 1, cfg.seed) for n in step]
        sample = [(n, next(streams[n])) for n in names[:cfg.child_tuning_fisher_batches]]
        self.child = make_child_tuning(cfg.child_tuning, cfg.child_tuning_p, model=self.model, batches=sample,
                                       loss_fn=lambda model, item: self._loss(*item),
                                       generator=torch.Generator(device=self.device).manual_seed(cfg.seed))

    def _all_ranks_mean(self, values: Dict[str, float]) -> Dict[str, float]:
        if self.world_size == 1:
            return values
        t = torch.tensor([values[n] for n in sorted(values)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {n: v / self.world_size for n, v in zip(sorted(values), t.tolist())}

    def fit(self) -> List[dict]:
        cfg = self.config
        if self.world_size > 1 and type(self).training_step is not Trainer.training_step:
            raise NotImplementedError(f"{type(self).__name__} has its own training_step, which does not synchronise "
                                      "gradients across processes: run it in one process")
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed + self.rank)  # the same initialisation (already made), its own dropout per rank
        self._build_child_tuning()
        if cfg.resume:
            self._resume()
            if self.world_size > 1:  # last.pt holds rank 0's random state: give each rank its own again
                seed_everything(cfg.seed + self.rank + 7919 * self.start_epoch)
        sizes = self._num_batches()
        for epoch in range(self.start_epoch, cfg.epochs):
            self.model.train()
            started = time.time()
            steps = task_schedule(sizes, cfg.task_sampling, cfg.tasks_per_step, epoch, cfg.epochs, cfg.seed)
            streams = {n: _Cycle(p, epoch, self.rank, self.world_size) for n, p in self.processors.items()}
            sums: Dict[str, float] = {}
            counts: Dict[str, int] = {}
            bar = tqdm(steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not self.show_progress,
                       mininterval=2.0, dynamic_ncols=True)
            for names in bar:
                losses = self.training_step(names, streams)
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + value
                    counts[name] = counts.get(name, 0) + 1
                bar.set_postfix({n: f"{sums[n] / counts[n]:.3f}" for n in sums}, refresh=False)
            train_seconds = time.time() - started
            train_loss = self._all_ranks_mean({n: sums[n] / counts[n] for n in sums})
            scores = self.evaluate(self.eval_model) if self.is_main else None
            if self.world_size > 1:  # the others wait for rank 0's evaluation and take its scores
                shared = [scores]
                dist.broadcast_object_list(shared, src=0)
                scores = shared[0]
            record = {"epoch": epoch + 1, "train_loss": train_loss,
                      "dev": scores, "lr": self.scheduler.get_last_lr()[0], "train_seconds": round(train_seconds, 1),
                      "seconds": round(time.time() - started, 1)}
            self.history.append(record)
            improved = scores["score"] > self.best_score
            if improved:
                self.best_score = scores["score"]
            if self.is_main:
                with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                if improved:
                    self._save_best(epoch + 1, scores)
                torch.save(self._state(epoch), self.out_dir / "last.pt")
                shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
                print(f"epoch {epoch + 1}: dev {shown} ({record['seconds']:.0f} s)", flush=True)
            if self.world_size > 1:
                dist.barrier()  # the files are written before any rank reads them
        return self.history
