"""What a technique is to the training loop: a Callback.

The hooks, in the order the loop calls them; every callback gets every hook, in the order it was given:

    on_fit_start(trainer)               once, before the first step (Child-Tuning-D's Fisher pass)
    on_before_update(trainer)           each step, after the gradients are clipped, before the update
                                        (Child-Tuning's gradient masks)
    on_after_update(trainer)            each step, after the update (EMA's moving average)
    on_evaluate(trainer) -> dict        at each evaluation: what joins its record in metrics.jsonl
    state_dict() / load_state_dict()    what a checkpoint must hold for --resume to continue exactly

Two roles replace a piece of the loop rather than observe it. A callback plays a role by defining its method;
at most one callback may play each (the Trainer refuses two, naming them):

    combine_losses(trainer, losses)     the step's per-task losses (still graphs): this callback does the
                                        backward (PCGrad: one backward per task, then the projection)
    evaluated_model(trainer) -> Module  the weights evaluated and kept as the best instead of the model (EMA,
                                        the checkpoint average)
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence


class Callback:
    """Every hook does nothing by default; a technique overrides the ones it needs."""

    combine_losses = None  # a role: def combine_losses(self, trainer, losses: Dict[str, Tensor]) -> None
    evaluated_model = None  # a role: def evaluated_model(self, trainer) -> nn.Module

    def on_fit_start(self, trainer) -> None:
        pass

    def on_before_update(self, trainer) -> None:
        pass

    def on_after_update(self, trainer) -> None:
        pass

    def on_evaluate(self, trainer) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


ROLES = ("combine_losses", "evaluated_model")


def role_players(callbacks: Sequence[Callback]) -> Dict[str, Optional[Callback]]:
    """{role: the one callback that plays it, or None}; two callbacks in one role is an error naming both."""
    players: Dict[str, Optional[Callback]] = {}
    for role in ROLES:
        found: List[Callback] = [c for c in callbacks if getattr(c, role, None) is not None]
        if len(found) > 1:
            raise ValueError(f"{' and '.join(type(c).__name__ for c in found)} both define {role}: "
                             "only one callback may play a role")
        players[role] = found[0] if found else None
    return players

