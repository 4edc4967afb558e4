"""What a technique is to the training loop: a Callback with a few named hooks, and its flags in one place.

The loop (tasks/trainer.py) calls, in order, for every callback it was given:

    on_fit_start(trainer)              once, before the first step (Child-Tuning-D's Fisher pass)
    backward(trainer, losses) -> bool  the step's per-task losses; True if it did the backward itself
                                       (PCGrad: one backward per task, then the projection)
    after_backward(trainer)            after clipping, before the update (Child-Tuning's gradient masks)
    after_step(trainer)                after the update (EMA's moving average)
    eval_model(trainer)                the weights to evaluate and keep instead of trainer.model, or None (EMA)
    state_dict() / load_state_dict()   what a checkpoint must hold for --resume to continue exactly

A technique that changes the data or the loss rather than the step wraps the processors instead
(`Technique.wrap_processors`: contrastive adversarial training), and the phases run before fine-tuning
(tasks/techniques/phases.py). Each technique's flags are the fields of one frozen dataclass (`Config`),
from which the CLIs generate argparse; nothing else declares them.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Dict, Optional, Sequence, Tuple

import torch


class Callback:
    """Every hook does nothing by default; a technique overrides the ones it needs."""

    combines_task_losses = False  # True: the loop keeps each task's loss graph for `backward` (PCGrad)

    def on_fit_start(self, trainer) -> None:
        pass

    def backward(self, trainer, losses: Dict[str, torch.Tensor]) -> bool:
        return False

    def after_backward(self, trainer) -> None:
        pass

    def after_step(self, trainer) -> None:
        pass

    def eval_model(self, trainer) -> Optional[torch.nn.Module]:
        return None

    def metrics(self, trainer) -> dict:
        """What the technique adds to each evaluation's record in metrics.jsonl (called once per evaluation)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Technique:
    """A registry entry: its name, what it is, its flags (Config), where it applies, and how it attaches."""

    name: str = ""
    summary: str = ""
    Config: type = None            # a frozen dataclass; each field is a --flag
    clis: Tuple[str, ...] = ("multitask", "classifier", "gan")  # the CLIs that offer it
    arms: Dict[str, Tuple[Sequence[str], str]] = {}  # ablation arm -> (its flags, what it is)

    def config(self, args: argparse.Namespace):
        return dataclass_from_args(self.Config, args)

    def callback(self, cfg, model: torch.nn.Module, seed: int = 0) -> Optional[Callback]:
        """The loop's hooks for this technique, or None when its flags leave it off."""
        return None

    def wrap_processors(self, cfg, model: torch.nn.Module, processors: Dict[str, object]) -> Dict[str, object]:
        return processors

    def conflict(self, args: argparse.Namespace) -> Optional[str]:
        """Why the parsed flags cannot run together with this technique, or None: checked when parsing."""
        return None


class ProcessorWrapper:
    """A processor around another, for a technique that changes the loss or the data: the same batches and
    the same loss weight (multitask: --{task}_loss_weight) unless the subclass says otherwise."""

    def __init__(self, base):
        self.base = base

    @property
    def loss_weight(self) -> float:
        return getattr(self.base, "loss_weight", 1.0)

    @property
    def innermost(self):
        """The task's own processor under every wrapper (its examples, tokenizer, settings)."""
        inner = self.base
        while hasattr(inner, "base"):
            inner = inner.base
        return inner

    def num_batches(self) -> int:
        return self.base.num_batches()

    def batches(self, epoch: int):
        return self.base.batches(epoch)

    def loss(self, model, batch) -> torch.Tensor:
        return self.base.loss(model, batch)


# ---- flags from dataclasses ----------------------------------------------------------------------------------

def add_dataclass_args(parser, cls, **defaults) -> None:
    """One --flag per dataclass field, typed from its annotation; `defaults` override the dataclass's.
    A field's help is its `metadata["help"]`; choices, type and metavar come from the metadata too, and
    `metadata["unset"]` says what a None default means (shown as the default only while it is None)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        default = defaults.get(field.name, field.default)
        kind, meta = hints[field.name], dict(field.metadata)
        extra = {"help": meta.get("help")}
        if default is None and "unset" in meta:
            extra["help"] += f" (default: {meta['unset']})"
        if "metavar" in meta:
            extra["metavar"] = meta["metavar"]
        if kind is bool:
            parser.add_argument(f"--{field.name}", action=argparse.BooleanOptionalAction, default=default, **extra)
            continue
        if typing.get_origin(kind) is typing.Union:  # Optional[X]
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if "choices" in meta:
            extra["choices"] = meta["choices"]
        parser.add_argument(f"--{field.name}", type=meta.get("type", kind), default=default, **extra)


def dataclass_from_args(cls, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def flag(default, help: str, **metadata):
    """A dataclass field that is also a documented command-line flag (metadata: choices, type, metavar, unset)."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})
