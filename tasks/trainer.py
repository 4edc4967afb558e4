"""The one training loop, shared by every CLI (multitask, classifier, the phases, the GAN).

It is model-agnostic, in the manner of minGPT's Trainer: it is given a model, a dict of "processors"
(anything with `num_batches()`, `batches(epoch)` and `loss(model, batch)`, see tasks/processors.py), an
`evaluate(model) -> {"score": ..., ...}` callback, and the techniques' callbacks (tasks/techniques/base.py).

An epoch is a schedule of batches, one task per batch (tasks/sampling.py); consecutive batches are grouped
into steps of `tasks_per_step` (default: as many batches as there are tasks, which under proportional
sampling may hold a task twice and another not at all), whose losses are summed, and `grad_accum` steps'
gradients are averaged into one optimizer step. The hooks, in the order they run:

    configure_optimizers()          the optimizers and schedules (GanTrainer: one per player)
    training_step(micro, streams)   forward + backward of one optimizer step's batches
      callbacks' backward           a technique may combine the per-task losses itself (PCGrad)
    optimizer_step()                clip_gradients(), callbacks' after_backward (masks), update, after_step (EMA)

Around them the loop evaluates (every epoch, or every `eval_every` steps; callbacks' metrics() join the
record), keeps the best weights, stops
early after `patience` evaluations without a gain, and writes a checkpoint (tasks/checkpointing.py) that
`--resume` continues from the exact batch: data order, RNG states, schedules and every callback's state.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from optim import AdamW, make_scheduler

from .checkpointing import load_state, rng_state, save_state, set_rng_state, write_jsonl
from .devices import Precision, compile_layers, pick_device
from .distributed import broadcast_from_main, init_distributed, mean_over_ranks, wrap_ddp
from .param_groups import param_groups
from .processors import to_device
from .sampling import SAMPLINGS, TaskStream, task_schedule
from .techniques.base import flag


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = flag(3, "training epochs")
    lr: float = flag(5e-5, "the encoder's peak learning rate")
    head_lr: Optional[float] = flag(None, "the heads' learning rate", unset="--lr")
    layer_lr_decay: float = flag(1.0, "layer-wise lr decay: encoder layer i of L at lr·d^(L−i), embeddings lr·d^(L+1), "
                                      "heads unchanged (1: off; tasks/param_groups.py)")
    weight_decay: float = flag(0.01, "AdamW's decoupled weight decay (not on biases and LayerNorms)")
    warmup_ratio: float = flag(0.06, "share of the steps with a linear warmup")
    schedule: str = flag("linear", "learning-rate schedule after warmup", choices=("constant", "linear", "cosine"))
    max_grad_norm: float = flag(1.0, "clip the gradient's global norm (0: off)")
    seed: int = flag(11711, "seed of initialisation, data order and dropout")
    use_gpu: bool = flag(False, "CUDA, else Apple MPS, else the CPU with a warning")
    mixed_precision: bool = flag(True, "on CUDA: bf16 autocast where supported, else fp16 with a gradient scaler")
    task_sampling: str = flag("proportional", "which task each batch comes from", choices=SAMPLINGS)
    tasks_per_step: int = flag(0, "batches per step, their task losses SUMMED into one update (0: as many as "
                                  "there are tasks); not --grad_accum, which AVERAGES whole steps")
    grad_accum: int = flag(1, "average the gradients of N steps into one update (a batch N times larger; "
                              "clipping acts on the mean)")
    eval_every: int = flag(0, "evaluate every N optimizer steps (0: once per epoch)")
    patience: int = flag(0, "stop after K evaluations without a better dev score (0: never); the best is kept")
    save_every: int = flag(0, "also write the resumable checkpoint every N optimizer steps (0: at evaluations only)")
    out_dir: str = flag("runs/multitask", "metrics, checkpoints and the saved model go here", metavar="DIR")
    resume: bool = flag(False, "continue from <out_dir>/last.safetensors, at the exact batch it was written; a flag "
                               "that changes the training must be as the checkpoint has it (tasks/run_lock.py)")
    allow_changed_flags: bool = flag(False, "with --resume: go on although such flags changed (each change is "
                                            "recorded, with its step, in <out_dir>/run_config.json's resumes)")
    compile: bool = flag(False, "torch.compile the encoder's layers (falls back to eager, with a warning)")

    def __post_init__(self):
        if self.task_sampling not in SAMPLINGS:
            raise ValueError(f"task_sampling must be one of {SAMPLINGS}, got {self.task_sampling!r}")
        if self.epochs < 1 or self.lr <= 0 or self.tasks_per_step < 0 or self.grad_accum < 1:
            raise ValueError("epochs must be >= 1, lr > 0, tasks_per_step >= 0 and grad_accum >= 1")
        if min(self.eval_every, self.patience, self.save_every) < 0:
            raise ValueError("eval_every, patience and save_every must be >= 0")
        if not 0 < self.layer_lr_decay <= 1:
            raise ValueError(f"layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def loss_weight(processor) -> float:
    """The processor's `loss_weight`, 1 if it has none: tasks' losses live on different scales (STS's MSE on the
    0–1 scale is ~0.03 where cross-entropy is ~1), and a summed step follows the largest."""
    return getattr(processor, "loss_weight", 1.0)


class Trainer:
    def __init__(self, model: torch.nn.Module, processors: Dict[str, object], config: TrainConfig,
                 evaluate: Callable[[torch.nn.Module], Dict[str, float]], callbacks: Sequence = (),
                 checkpoint_meta: Optional[dict] = None, show_progress: bool = True):
        self.model, self.processors, self.config = model, dict(processors), config
        self.evaluate, self.meta = evaluate, checkpoint_meta or {}
        self.callbacks = [c for c in callbacks if c is not None]
        self.rank, self.world_size, local_rank = init_distributed(config.use_gpu)
        self.is_main = self.rank == 0  # the one process that evaluates, prints and writes files
        self.show_progress = show_progress and self.is_main
        self.device = pick_device(config.use_gpu)
        if self.device.type == "cuda" and self.world_size > 1:
            self.device = torch.device("cuda", local_rank)
        self.model.to(self.device)
        self.precision = Precision(self.device, config.mixed_precision)
        if config.compile:
            compile_layers(self.model)
        self.ddp = (wrap_ddp(self.model, self._loss, self.device, local_rank)
                    if self.world_size > 1 and self.synchronises_through_ddp else None)
        self.out_dir = Path(config.out_dir)
        sizes = self.num_batches()
        self.steps_per_epoch = -(-len(task_schedule(sizes, config.task_sampling, config.tasks_per_step, 0,
                                                    config.epochs, config.seed)) // config.grad_accum)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.optimizers, self.schedulers = self.configure_optimizers()
        self.optimizer, self.scheduler = self.optimizers[0], self.schedulers[0]
        # where training stands; all of it goes into the checkpoint
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.history: List[dict] = []
        self.best_score, self.evals_without_gain = -math.inf, 0
        self._running: Dict[str, Dict[str, float]] = {"sums": {}, "counts": {}}
        self._taken: Dict[str, int] = {}
        self._restored_rng: Optional[dict] = None

    synchronises_through_ddp = True  # False: the subclass averages its gradients itself (GanTrainer)

    def num_batches(self) -> Dict[str, int]:
        """Each task's batches per epoch in this process (under DDP, its share: every world_size-th batch)."""
        return {n: -(-p.num_batches() // self.world_size) for n, p in self.processors.items()}

    # ---- hooks ------------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        """([optimizers], [schedules]): our AdamW over param_groups, warmup then the chosen decay."""
        cfg = self.config
        optimizer = AdamW(param_groups(self.model, cfg.lr, cfg.head_lr, cfg.weight_decay, cfg.layer_lr_decay), lr=cfg.lr)
        return [optimizer], [make_scheduler(optimizer, cfg.schedule, int(cfg.warmup_ratio * self.total_steps),
                                            self.total_steps)]

    def task_loss(self, name: str, batch) -> torch.Tensor:
        """The task's weighted loss on one batch, in float32 (forward under autocast on a GPU)."""
        with self.precision.autocast():
            return self._loss(name, to_device(batch, self.device)).float()

    def _loss(self, name: str, batch) -> torch.Tensor:
        processor = self.processors[name]
        return loss_weight(processor) * processor.loss(self.model, batch)

    def _synced_loss(self, name: str, batch, sync: bool) -> torch.Tensor:
        """The loss through DDP (whose backward then averages the gradients over the ranks if `sync`)."""
        if self.ddp is None:
            return self.task_loss(name, batch)
        with self.precision.autocast(), (contextlib.nullcontext() if sync else self.ddp.no_sync()):
            return self.ddp(name, to_device(batch, self.device)).float()

    def training_step(self, micro: List[List[str]], streams: Dict[str, TaskStream]) -> Dict[str, float]:
        """One optimizer step over `micro` (grad_accum lists of task names, one batch each). Returns each task's
        mean batch loss, unweighted (divided by its `loss_weight`), so curves compare across weightings."""
        combine = any(c.combines_task_losses for c in self.callbacks)
        scale = 1.0 / len(micro)  # grad_accum: the mean over the accumulated steps
        losses: Dict[str, torch.Tensor] = {}  # per task: the sum over its batches in this step
        flat = [name for names in micro for name in names]
        for i, name in enumerate(flat):
            # under DDP, gradients are averaged over the ranks once per step, in the step's last backward
            loss = self._synced_loss(name, next(streams[name]), sync=not combine and i == len(flat) - 1)
            if len(micro) > 1:
                loss = loss * scale
            if not combine:
                self.precision.scale(loss).backward()  # summed over the step's batches by accumulating gradients
                loss = loss.detach()
            losses[name] = losses[name] + loss if name in losses else loss
        if combine and not any(c.backward(self, {n: self.precision.scale(v) for n, v in losses.items()})
                               for c in self.callbacks):
            self.precision.scale(sum(losses.values())).backward()
        self.optimizer_step()
        return {name: loss.item() / scale / flat.count(name) / loss_weight(self.processors[name])
                for name, loss in losses.items()}

    def clip_gradients(self) -> None:
        if self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)

    # exercise: trainer_step — Unscale, clip, after_backward, step optimizers and schedules, zero grads, after_step
    def optimizer_step(self) -> None:
        """Clip, let the callbacks mask the gradients, update every optimizer and schedule, then after_step."""
        for optimizer in self.optimizers:
            self.precision.unscale_(optimizer)
        self.clip_gradients()
        for c in self.callbacks:
            c.after_backward(self)
        for optimizer, scheduler in zip(self.optimizers, self.schedulers):
            self.precision.step(optimizer)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        self.precision.update()
        for c in self.callbacks:
            c.after_step(self)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are evaluated and kept as the best: a callback's (EMA's average), else the model."""
        for c in self.callbacks:
            model = c.eval_model(self)
            if model is not None:
                return model
        return self.model

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizers": [o.state_dict() for o in self.optimizers],
                "schedulers": [s.state_dict() for s in self.schedulers],
                "callbacks": [c.state_dict() for c in self.callbacks], "rng": rng_state(),
                "position": {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                             "taken": self._taken, "running": self._running},
                "history": self.history, "best_score": self.best_score, "evals_without_gain": self.evals_without_gain,
                "config": dataclasses.asdict(self.config), "meta": self.meta}

    def save_checkpoint(self) -> None:
        if self.is_main:
            save_state(self.out_dir / "last.safetensors", self.state_dict())

    def save_best(self, scores: Dict[str, float]) -> None:
        save_state(self.out_dir / "best.safetensors",
                   {"model": self.eval_model.state_dict(), "meta": self.meta, "config": dataclasses.asdict(self.config),
                    "epoch": self.epoch + 1, "step": self.global_step, "scores": scores})

    def resume(self) -> None:
        path = self.out_dir / "last.safetensors"
        if not path.is_file():
            print(f"--resume: no checkpoint at {path}; starting from scratch")
            return
        state = load_state(path)
        self.model.load_state_dict(state["model"])
        for obj, saved in zip(self.optimizers + self.schedulers + self.callbacks,
                              state["optimizers"] + state["schedulers"] + state["callbacks"]):
            obj.load_state_dict(saved)
        pos = state["position"]
        self.epoch, self.step_in_epoch, self.global_step = pos["epoch"], pos["step_in_epoch"], pos["global_step"]
        self._taken, self._running = pos["taken"], pos["running"]
        self.history, self.best_score = state["history"], state["best_score"]
        self.evals_without_gain = state["evals_without_gain"]
        self._restored_rng = state["rng"]  # set once the streams have replayed their batches
        if self.is_main:
            print(f"resumed from {path} at epoch {self.epoch + 1}, step {self.step_in_epoch} of {self.steps_per_epoch}")

    # ---- the loop ----------------------------------------------------------------------------------------------
    def _evaluate(self, started: float, epoch_done: bool) -> bool:
        """Score dev, record it, keep the best, write metrics and the checkpoint. True: patience ran out."""
        sums, counts = self._running["sums"], self._running["counts"]
        train_loss = mean_over_ranks({n: sums[n] / counts[n] for n in sums}, self.world_size, self.device)
        scores = broadcast_from_main(self.evaluate(self.eval_model) if self.is_main else None, self.world_size)
        self.model.train()  # whatever mode the evaluation left it in: training goes on
        record = {"epoch": self.epoch + 1, "step": self.global_step, "train_loss": train_loss, "dev": scores,
                  "lr": self.scheduler.get_last_lr()[0], "train_seconds": round(self._running.get("seconds", 0.0), 1),
                  "seconds": round(time.time() - started, 1)}
        for c in self.callbacks:
            record.update(c.metrics(self))
        self.history.append(record)
        self._running = {"sums": {}, "counts": {}}
        improved = scores["score"] > self.best_score
        self.best_score = max(self.best_score, scores["score"])
        self.evals_without_gain = 0 if improved else self.evals_without_gain + 1
        if self.is_main and improved:
            self.save_best(scores)
        if epoch_done:  # the checkpoint written now starts the next epoch
            self.epoch, self.step_in_epoch, self._taken = self.epoch + 1, 0, {}
        if self.is_main:
            write_jsonl(self.out_dir / "metrics.jsonl", self.history)
            self.save_checkpoint()
        if self.show_progress:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, (int, float)))
            print(f"epoch {record['epoch']}, step {self.global_step}: dev {shown} ({record['seconds']:.0f} s)", flush=True)
        if self.world_size > 1:
            torch.distributed.barrier()  # the files are written before any rank reads them
        return 0 < self.config.patience <= self.evals_without_gain

    def fit(self) -> List[dict]:
        cfg = self.config
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed + self.rank)  # the same initialisation (already made), its own dropout per rank
        for c in self.callbacks:
            c.on_fit_start(self)
        if cfg.resume:
            self.resume()
        stop, sizes, started = False, self.num_batches(), time.time()
        while self.epoch < cfg.epochs and not stop:
            self.model.train()
            steps = task_schedule(sizes, cfg.task_sampling, cfg.tasks_per_step, self.epoch, cfg.epochs, cfg.seed)
            streams = {n: TaskStream(p, self.epoch, self.rank, self.world_size) for n, p in self.processors.items()}
            if self._restored_rng is not None:  # resuming: replay the batches already trained on, then the RNG
                for name, stream in streams.items():
                    stream.skip(self._taken.get(name, 0))
                set_rng_state(self._restored_rng)
                if self.world_size > 1:  # the checkpoint holds rank 0's random state: give each rank its own
                    seed_everything(cfg.seed + self.rank + 7919 * self.global_step)
                self._restored_rng = None
            bar = tqdm(range(self.step_in_epoch, self.steps_per_epoch), desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                       initial=self.step_in_epoch, total=self.steps_per_epoch, disable=not self.show_progress,
                       mininterval=2.0, dynamic_ncols=True)
            for step in bar:
                tick = time.time()
                micro = steps[step * cfg.grad_accum:(step + 1) * cfg.grad_accum]
                losses = self.training_step(micro, streams)
                self.step_in_epoch, self.global_step = step + 1, self.global_step + 1
                self._taken = {n: s.taken for n, s in streams.items()}
                sums, counts = self._running["sums"], self._running["counts"]
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + value
                    counts[name] = counts.get(name, 0) + 1
                self._running["seconds"] = self._running.get("seconds", 0.0) + time.time() - tick
                bar.set_postfix({n: f"{sums[n] / counts[n]:.3f}" for n in sums}, refresh=False)
                last = step + 1 == self.steps_per_epoch
                if self.global_step == self.total_steps or (
                        cfg.eval_every and self.global_step % cfg.eval_every == 0) or (last and not cfg.eval_every):
                    stop = self._evaluate(started, epoch_done=last)
                    started = time.time()
                    if stop:
                        break
                elif cfg.save_every and self.global_step % cfg.save_every == 0:
                    self.save_checkpoint()
            bar.close()
            if self.step_in_epoch == self.steps_per_epoch:  # ended without an evaluation (--eval_every)
                self.epoch, self.step_in_epoch, self._taken = self.epoch + 1, 0, {}
        return self.history
