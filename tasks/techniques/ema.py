"""An exponential moving average of the weights (Polyak averaging), updated after every step:

    w_ema ← d · w_ema + (1 − d) · w

It is what is evaluated, kept as the best checkpoint and predicted with: the average of the last ~1/(1 − d)
steps' weights, smoother than any one of them (torch.optim.swa_utils; the copy stays eager)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..engine.callbacks import Callback
from ..engine.config import flag
from .base import Technique


@dataclass(frozen=True)
class EMAConfig:
    ema_decay: float = flag(0.0, "> 0: evaluate, keep and predict with a moving average of the weights (e.g. 0.995)")

    def __post_init__(self):
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0: off), got {self.ema_decay}")


class EMACallback(Callback):
    def __init__(self, model, decay: float):
        self.average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))

    def on_after_update(self, trainer) -> None:
        self.average.update_parameters(trainer.model)

    def evaluated_model(self, trainer):
        return self.average.module

    def state_dict(self) -> dict:
        return self.average.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.average.load_state_dict(state)


class EMATechnique(Technique):
    name, summary, Config = "ema", "a moving average of the weights", EMAConfig
    arms = {"ema": (("--ema_decay", "0.995"), "moving average of the weights (d = 0.995)")}

    def enabled(self, cfg: EMAConfig) -> bool:
        return cfg.ema_decay > 0

    def callback(self, cfg: EMAConfig, model, seed: int = 0) -> Optional[Callback]:
        return EMACallback(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
