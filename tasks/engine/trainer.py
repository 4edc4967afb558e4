"""The one training loop, shared by every CLI (multitask, classifier, the phases, the GAN).

It is model-agnostic, in the manner of minGPT's Trainer: it is given a model, a dict of "processors"
(anything with `num_batches()`, `batches(epoch)` and `loss(model, batch)`, see tasks/domain/processors.py), an
`evaluate(model) -> {"score": ..., ...}` function, and the techniques' callbacks (callbacks.py lists their
hooks). Where it runs (device, precision, compile, processes) is the Accelerator's business, not the loop's;
what a checkpoint holds and how `--resume` continues from the exact batch, resumable.py's.

An epoch is a schedule of batches, one task per batch (sampling.py), grouped into steps of `tasks_per_step`
whose losses are summed; `grad_accum` steps' gradients are averaged into one optimizer step. A subclass may
override three methods (GanTrainer: one per player):

    configure_optimizers()          the optimizers and schedules
    training_step(micro, streams)   forward + backward of one optimizer step's batches, then optimizer_step()
    clip_gradients()                before the callbacks' on_before_update

Around them the loop evaluates (every epoch, or every `eval_every` steps), keeps the best weights, stops early
after `patience` evaluations without a gain, and writes the checkpoints.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from optim import AdamW, make_scheduler

from .accelerator import Accelerator
from .callbacks import role_players
from .checkpointing import write_jsonl
from .config import TrainConfig
from .param_groups import param_groups
from .progress import Progress
from .resumable import Resumable
from .sampling import TaskStream, task_schedule


def loss_weight(processor) -> float:
    """The processor's `loss_weight`, 1 if it has none: tasks' losses live on different scales (STS's MSE on the
    0–1 scale is ~0.03 where cross-entropy is ~1), and a summed step follows the largest."""
    return getattr(processor, "loss_weight", 1.0)


class Trainer(Resumable):
    synchronises_through_ddp = True  # False: the subclass averages its gradients itself (GanTrainer)

    def __init__(self, model: torch.nn.Module, processors: Dict[str, object], config: TrainConfig,
                 evaluate: Callable[[torch.nn.Module], Dict[str, float]], callbacks: Sequence = (),
                 checkpoint_meta: Optional[dict] = None, show_progress: bool = True):
        self.processors, self.config, self.evaluate = dict(processors), config, evaluate
        self.meta = checkpoint_meta or {}
        self.callbacks = [c for c in callbacks if c is not None]
        self.roles = role_players(self.callbacks)  # refuses two callbacks in one role
        self.accelerator = acc = Accelerator(config.use_gpu, config.mixed_precision, config.compile)
        self.model = acc.prepare(model, self._loss, self.synchronises_through_ddp)
        self.device, self.precision, self.world_size = acc.device, acc.precision, acc.world_size
        self.show_progress = show_progress and acc.is_main
        self.out_dir = Path(config.out_dir)
        schedule = task_schedule(self.num_batches(), config.task_sampling, config.tasks_per_step, 0, config.epochs,
                                 config.seed)
        self.steps_per_epoch = -(-len(schedule) // config.grad_accum)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.optimizers, self.schedulers = self.configure_optimizers()
        self.optimizer, self.scheduler = self.optimizers[0], self.schedulers[0]
        self.progress = Progress()  # where training stands; all of it goes into the checkpoint

    def num_batches(self) -> Dict[str, int]:
        """Each task's batches per epoch in this process (under DDP, its share: every world_size-th batch)."""
        return {n: self.accelerator.shard(p.num_batches()) for n, p in self.processors.items()}

    # ---- the step ---------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        """([optimizers], [schedules]): our AdamW over param_groups, warmup then the chosen decay."""
        cfg = self.config
        groups = param_groups(self.model, cfg.lr, cfg.head_lr, cfg.weight_decay, cfg.layer_lr_decay)
        optimizer = AdamW(groups, lr=cfg.lr)
        return [optimizer], [make_scheduler(optimizer, cfg.schedule, int(cfg.warmup_ratio * self.total_steps),
                                            self.total_steps)]

    def _loss(self, name: str, batch) -> torch.Tensor:
        processor = self.processors[name]
        return loss_weight(processor) * processor.loss(self.model, batch)

    def task_loss(self, name: str, batch) -> torch.Tensor:
        """The task's weighted loss on one batch in this process, in float32 (Child-Tuning-D's Fisher pass)."""
        return self.accelerator.loss(self._loss, name, batch, local=True)

    def training_step(self, micro: List[List[str]], streams: Dict[str, TaskStream]) -> Dict[str, float]:
        """One optimizer step over `micro` (grad_accum lists of task names, one batch each). Returns each task's
        mean batch loss, unweighted (divided by its `loss_weight`), so curves compare across weightings."""
        combiner = self.roles["combine_losses"]
        scale = 1.0 / len(micro)  # grad_accum: the mean over the accumulated steps
        losses: Dict[str, torch.Tensor] = {}  # per task: the sum over its batches in this step
        flat = [name for names in micro for name in names]
        for i, name in enumerate(flat):
            # under DDP, gradients are averaged over the ranks once per step, in the step's last backward
            sync = combiner is None and i == len(flat) - 1
            loss = self.accelerator.loss(self._loss, name, next(streams[name]), sync)
            if len(micro) > 1:
                loss = loss * scale
            if combiner is None:
                self.precision.scale(loss).backward()  # summed over the step's batches by accumulating gradients
                loss = loss.detach()
            losses[name] = losses[name] + loss if name in losses else loss
        if combiner is not None:
            combiner.combine_losses(self, {n: self.precision.scale(v) for n, v in losses.items()})
        self.optimizer_step()
        return {name: loss.item() / scale / flat.count(name) / loss_weight(self.processors[name])
                for name, loss in losses.items()}

    def clip_gradients(self) -> None:
        if self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)

    # exercise: trainer_step — Unscale, clip, on_before_update, step each optimizer + schedule, zero grads, on_after_update
    def optimizer_step(self) -> None:
        """Clip, let the callbacks mask the gradients, update every optimizer and schedule, then on_after_update."""
        for optimizer in self.optimizers:
            self.precision.unscale_(optimizer)
        self.clip_gradients()
        for c in self.callbacks:
            c.on_before_update(self)
        for optimizer, scheduler in zip(self.optimizers, self.schedulers):
            self.precision.step(optimizer)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        self.precision.update()
        for c in self.callbacks:
            c.on_after_update(self)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are evaluated and kept as the best: a callback's (EMA's average), else the model."""
        player = self.roles["evaluated_model"]
        return player.evaluated_model(self) if player is not None else self.model

    # ---- the loop ---------------------------------------------------------------------------------------------
    def _evaluate(self, started: float, epoch_done: bool) -> bool:
        """Score dev, record it, keep the best, write metrics and the checkpoint. True: patience ran out."""
        acc, progress = self.accelerator, self.progress
        train_loss = acc.mean(progress.train_loss())
        scores = acc.broadcast(self.evaluate(self.eval_model) if acc.is_main else None)
        self.model.train()  # whatever mode the evaluation left it in: training goes on
        record = {"epoch": progress.epoch + 1, "step": progress.global_step, "train_loss": train_loss, "dev": scores,
                  "lr": self.scheduler.get_last_lr()[0], "train_seconds": round(progress.train_seconds, 1),
                  "seconds": round(time.time() - started, 1)}
        for c in self.callbacks:
            record.update(c.on_evaluate(self))
        if progress.evaluated(record, scores["score"]) and acc.is_main:
            self.save_best(scores)
        if epoch_done:  # the checkpoint written now starts the next epoch
            progress.next_epoch()
        if acc.is_main:
            write_jsonl(self.out_dir / "metrics.jsonl", progress.history)
            self.save_checkpoint()
        if self.show_progress:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, (int, float)))
            print(f"epoch {record['epoch']}, step {record['step']}: dev {shown} ({record['seconds']:.0f} s)", flush=True)
        acc.barrier()  # the files are written before any rank reads them
        return 0 < self.config.patience <= progress.evals_without_gain

    def fit(self) -> List[dict]:
        cfg, progress, acc = self.config, self.progress, self.accelerator
        if acc.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        acc.seed(cfg.seed)
        for c in self.callbacks:
            c.on_fit_start(self)
        if cfg.resume:
            self.resume()
        stop, sizes, started = False, self.num_batches(), time.time()
        while progress.epoch < cfg.epochs and not stop:
            self.model.train()
            steps = task_schedule(sizes, cfg.task_sampling, cfg.tasks_per_step, progress.epoch, cfg.epochs, cfg.seed)
            streams = {n: TaskStream(p, progress.epoch, acc.rank, acc.world_size) for n, p in self.processors.items()}
            self.replay(streams)  # after --resume: skip what the checkpoint's run trained on (resumable.py)
            bar = tqdm(range(progress.step_in_epoch, self.steps_per_epoch), initial=progress.step_in_epoch,
                       total=self.steps_per_epoch, desc=f"epoch {progress.epoch + 1}/{cfg.epochs}",
                       disable=not self.show_progress, mininterval=2.0, dynamic_ncols=True)
            for step in bar:
                tick = time.time()
                losses = self.training_step(steps[step * cfg.grad_accum:(step + 1) * cfg.grad_accum], streams)
                taken = {n: s.taken for n, s in streams.items()}
                bar.set_postfix(progress.step_done(step, taken, losses, time.time() - tick), refresh=False)
                last, done = step + 1 == self.steps_per_epoch, progress.global_step
                if done == self.total_steps or (cfg.eval_every and done % cfg.eval_every == 0) or (
                        last and not cfg.eval_every):
                    stop, started = self._evaluate(started, epoch_done=last), time.time()
                    if stop:
                        break
                elif cfg.save_every and done % cfg.save_every == 0:
                    self.save_checkpoint()
            bar.close()
            if progress.step_in_epoch == self.steps_per_epoch:  # ended without an evaluation (--eval_every)
                progress.next_epoch()
        return progress.history
