"""The one training loop, shared by every CLI (multitask, single-task sentiment, and later phases).

It is model-agnostic, in the manner of minGPT's Trainer: it is given a model, a dict of "processors"
(anything with `num_batches()`, `batches(epoch)` and `loss(model, batch)`, see tasks/processors.py) and an
`evaluate(model) -> {"score": ..., ...}` callback. It owns everything else: device and bf16 autocast,
the task schedule, gradient surgery, Child-Tuning masks, clipping, our AdamW with warmup + decay, seeding,
progress bars, per-epoch evaluation, the best checkpoint, `--resume`, and a metrics file to plot.

One epoch is a schedule of batches, one task per batch (`task_schedule`); consecutive batches are grouped
into steps of `tasks_per_step` (default: as many as there are tasks), whose losses are summed — or, with
`pcgrad`, combined by gradient surgery per task — into one optimizer step.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from optim import AdamW, PCGrad, is_no_decay, make_child_tuning, make_scheduler

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

    def __post_init__(self):
        if self.task_sampling not in SAMPLINGS:
            raise ValueError(f"task_sampling must be one of {SAMPLINGS}, got {self.task_sampling!r}")
        if self.epochs < 1 or self.lr <= 0 or self.tasks_per_step < 0:
            raise ValueError("epochs must be >= 1, lr > 0 and tasks_per_step >= 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


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
    """A task's batches as an endless stream: a fresh shuffled pass each time one runs out."""

    def __init__(self, processor, epoch: int):
        self.processor, self.epoch, self.passes = processor, epoch, 0
        self.it = processor.batches(self._seed())

    def _seed(self) -> int:
        return self.epoch * 1000 + self.passes

    def __next__(self):
        try:
            return next(self.it)
        except StopIteration:
            self.passes += 1
            self.it = self.processor.batches(self._seed())
            return next(self.it)


class Trainer:
    def __init__(self, model: torch.nn.Module, processors: Dict[str, object], config: TrainConfig,
                 evaluate: Callable[[torch.nn.Module], Dict[str, float]], checkpoint_meta: Optional[dict] = None,
                 show_progress: bool = True):
        self.model, self.processors, self.config = model, dict(processors), config
        self.evaluate, self.meta, self.show_progress = evaluate, checkpoint_meta or {}, show_progress
        self.device = pick_device(config.use_gpu)
        self.model.to(self.device)
        self.out_dir = Path(config.out_dir)
        self.history: List[dict] = []
        self.best_score = -math.inf
        self.start_epoch = 0
        self.optimizer = AdamW(param_groups(model, config.lr, config.head_lr, config.weight_decay), lr=config.lr)
        self.steps_per_epoch = len(task_schedule({n: p.num_batches() for n, p in self.processors.items()},
                                                 config.task_sampling, config.tasks_per_step, 0, config.epochs, config.seed))
        total = self.steps_per_epoch * config.epochs
        self.scheduler = make_scheduler(self.optimizer, config.schedule, int(config.warmup_ratio * total), total)
        shared = [p for n, p in model.named_parameters() if n.startswith("bert.") and p.requires_grad]
        self.surgery = (PCGrad(self.optimizer, shared, generator=torch.Generator().manual_seed(config.seed))
                        if config.pcgrad and shared else None)
        self.child = None  # built at the start of fit (Child-Tuning-D needs a pass over the data)

    # ---- one optimizer step ------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda" and self.config.bf16)

    def _loss(self, name: str, batch) -> torch.Tensor:
        with self._autocast():
            return self.processors[name].loss(self.model, to_device(batch, self.device)).float()

    def training_step(self, names: List[str], streams: Dict[str, _Cycle]) -> Dict[str, float]:
        """Forward and backward the step's batches, then clip and update. Returns each task's mean batch loss."""
        losses: Dict[str, torch.Tensor] = {}  # per task: the sum over its batches in this step
        for name in names:
            loss = self._loss(name, next(streams[name]))
            if self.surgery is None:
                loss.backward()  # summed over the step's batches by accumulating gradients
                loss = loss.detach()
            losses[name] = losses[name] + loss if name in losses else loss
        if self.surgery is not None:
            self.surgery.backward(list(losses.values()))  # one backward per task, then projection
        if self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        if self.child is not None:  # after clipping, as the reference applies it inside the optimizer step
            self.child.apply(self.model)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {name: loss.item() / names.count(name) for name, loss in losses.items()}

    # ---- checkpoints -----------------------------------------------------------------------------------------
    def _state(self, epoch: int) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": epoch, "history": self.history,
                "best_score": self.best_score, "config": dataclasses.asdict(self.config), "meta": self.meta,
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                "pcgrad_rng": self.surgery.generator.get_state() if self.surgery else None,
                "child": self.child.state_dict() if self.child is not None else None}

    def _save_best(self, epoch: int, scores: Dict[str, float]) -> None:
        torch.save({"model": self.model.state_dict(), "meta": self.meta, "config": dataclasses.asdict(self.config),
                    "epoch": epoch, "scores": scores}, self.out_dir / "best.pt")

    def _resume(self) -> None:
        path = self.out_dir / "last.pt"
        if not path.is_file():
            warnings.warn(f"--resume: no checkpoint at {path}; starting from scratch")
            return
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own file: holds RNG states
        self.model.load_state_dict(state["model"])
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

    def fit(self) -> List[dict]:
        cfg = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed)
        self._build_child_tuning()
        if cfg.resume:
            self._resume()
        sizes = {n: p.num_batches() for n, p in self.processors.items()}
        for epoch in range(self.start_epoch, cfg.epochs):
            self.model.train()
            started = time.time()
            steps = task_schedule(sizes, cfg.task_sampling, cfg.tasks_per_step, epoch, cfg.epochs, cfg.seed)
            streams = {n: _Cycle(p, epoch) for n, p in self.processors.items()}
            sums: Dict[str, float] = {}
            counts: Dict[str, int] = {}
            bar = tqdm(steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not self.show_progress,
                       mininterval=2.0, dynamic_ncols=True)
            for names in bar:
                for name, value in self.training_step(names, streams).items():
                    sums[name] = sums.get(name, 0.0) + value
                    counts[name] = counts.get(name, 0) + 1
                bar.set_postfix({n: f"{sums[n] / counts[n]:.3f}" for n in sums}, refresh=False)
            train_seconds = time.time() - started
            scores = self.evaluate(self.model)
            record = {"epoch": epoch + 1, "train_loss": {n: sums[n] / counts[n] for n in sums},
                      "dev": scores, "lr": self.scheduler.get_last_lr()[0], "train_seconds": round(train_seconds, 1),
                      "seconds": round(time.time() - started, 1)}
            self.history.append(record)
            with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if scores["score"] > self.best_score:
                self.best_score = scores["score"]
                self._save_best(epoch + 1, scores)
            torch.save(self._state(epoch), self.out_dir / "last.pt")
            shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
            print(f"epoch {epoch + 1}: dev {shown} ({record['seconds']:.0f} s)", flush=True)
        return self.history
