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
    """The Trainer's checkpoint methods. They use what its __init__ builds: model, optimizers, schedulers,
    callbacks, progress, config, meta, accelerator, out_dir, steps_per_epoch, and eval_model."""

    _restored_rng: Optional[dict] = None  # a loaded checkpoint's RNG states, restored once the streams replayed

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

    def replay(self, streams: Dict[str, TaskStream]) -> None:
        """After --resume, in the first epoch: each stream skips the batches already trained on, then the RNG
        states are the checkpoint's, as they were at that step of the uninterrupted run."""
        if self._restored_rng is None:
            return
        for name, stream in streams.items():
            stream.skip(self.progress.taken.get(name, 0))
        set_rng_state(self._restored_rng)
        self.accelerator.reseed_after_resume(self.config.seed, self.progress.global_step)
        self._restored_rng = None
