"""Where training stands: everything the loop counts, all of which a checkpoint holds for an exact --resume.

    epoch, step_in_epoch, global_step   the position (epoch and step_in_epoch count from 0)
    taken                               each task's batches trained on in this epoch (replayed on resume)
    running                             each task's summed loss, steps and training seconds since the last evaluation
    history, best_score, evals_without_gain   the evaluations so far, the best dev score, patience's count
"""
from __future__ import annotations

import math
from typing import Dict, List


class Progress:
    def __init__(self):
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.taken: Dict[str, int] = {}
        self.running: Dict[str, dict] = {"sums": {}, "counts": {}}  # (+ "seconds")
        self.history: List[dict] = []
        self.best_score, self.evals_without_gain = -math.inf, 0

    def step_done(self, step: int, taken: Dict[str, int], losses: Dict[str, float], seconds: float) -> Dict[str, str]:
        """Step `step` of this epoch is done: the position, the running means; returns them for a progress bar."""
        self.step_in_epoch, self.global_step, self.taken = step + 1, self.global_step + 1, taken
        sums, counts = self.running["sums"], self.running["counts"]
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + 1
        self.running["seconds"] = self.running.get("seconds", 0.0) + seconds
        return {n: f"{sums[n] / counts[n]:.3f}" for n in sums}

    def train_loss(self) -> Dict[str, float]:
        """Each task's mean batch loss since the last evaluation."""
        return {n: s / self.running["counts"][n] for n, s in self.running["sums"].items()}

    @property
    def train_seconds(self) -> float:
        return self.running.get("seconds", 0.0)

    def evaluated(self, record: dict, score: float) -> bool:
        """Record an evaluation and start the running means afresh; True if its score is the best so far."""
        self.history.append(record)
        self.running = {"sums": {}, "counts": {}}
        improved = score > self.best_score
        self.best_score = max(self.best_score, score)
        self.evals_without_gain = 0 if improved else self.evals_without_gain + 1
        return improved

    def next_epoch(self) -> None:
        self.epoch, self.step_in_epoch, self.taken = self.epoch + 1, 0, {}

    def state_dict(self) -> dict:
        return {"position": {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                             "taken": self.taken, "running": self.running},
                "history": self.history, "best_score": self.best_score, "evals_without_gain": self.evals_without_gain}

    def load_state_dict(self, state: dict) -> None:
        pos = state["position"]
        self.epoch, self.step_in_epoch, self.global_step = pos["epoch"], pos["step_in_epoch"], pos["global_step"]
        self.taken, self.running = pos["taken"], pos["running"]
        self.history, self.best_score = state["history"], state["best_score"]
        self.evals_without_gain = state["evals_without_gain"]
