"""The trainer's checkpoints: what they hold, and how `--resume` continues from the exact batch.

A Trainer (trainer.py) is Resumable: `last.safetensors` holds the model, every optimizer and schedule, every
callback's state, the RNG states and the Progress (position, running losses, evaluations); `best.safetensors`
the evaluated weights of the best evaluation. Resuming loads them, and the first epoch's batch streams then
skip the batches already trained on before the RNG states are set back, so that the rest of the epoch sees the
same batches and the same dropout masks as an uninterrupted run (tests/test_trainer_features.py kills one).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional

from .checkpointing import load_state, rng_state, save_state, set_rng_state
from .sampling import TaskStream


class Resumable:
    """Checkpoint methods of the Trainer; they read its model, optimizers, schedulers, callbacks and progress."""

    _restored_rng: Optional[dict] = None  # the RNG states of a loaded checkpoint, set once the streams replayed

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizers": [o.state_dict() for o in self.optimizers],
                "schedulers": [s.state_dict() for s in self.schedulers],
                "callbacks": [c.state_dict() for c in self.callbacks], "rng": rng_state(), **self.progress.state_dict(),
                "config": dataclasses.asdict(self.config), "meta": self.meta}

    def save_checkpoint(self) -> None:
        if self.accelerator.is_main:
            save_state(self.out_dir / "last.safetensors", self.state_dict())

    def save_best(self, scores: Dict[str, float]) -> None:
        save_state(self.out_dir / "best.safetensors",
                   {"model": self.eval_model.state_dict(), "meta": self.meta, "config": dataclasses.asdict(self.config),
                    "epoch": self.progress.epoch + 1, "step": self.progress.global_step, "scores": scores})

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
        self.progress.load_state_dict(state)
        self._restored_rng = state["rng"]
        if self.accelerator.is_main:
            print(f"resumed from {path} at epoch {self.progress.epoch + 1}, step {self.progress.step_in_epoch} of "
                  f"{self.steps_per_epoch}")

    def streams(self) -> Dict[str, TaskStream]:
        """This epoch's batch streams; after --resume, each first skips the batches already trained on."""
        acc, progress = self.accelerator, self.progress
        streams = {n: TaskStream(p, progress.epoch, acc.rank, acc.world_size) for n, p in self.processors.items()}
        if self._restored_rng is not None:
            for name, stream in streams.items():
                stream.skip(progress.taken.get(name, 0))
            set_rng_state(self._restored_rng)
            acc.reseed_after_resume(self.config.seed, progress.global_step)
            self._restored_rng = None
        return streams
