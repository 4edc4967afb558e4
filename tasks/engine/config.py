"""Configs as frozen dataclasses whose fields are also the command-line flags.

A field made with `flag(default, help)` is one documented --flag: `add_dataclass_args` generates argparse
from the dataclass (type from the annotation, --[no-]x for a bool), `dataclass_from_args` builds the config
back from the parsed flags. Each flag is declared once, next to what it configures: the loop's here
(TrainConfig), each technique's in its module.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from typing import Optional

from .sampling import SAMPLINGS


def flag(default, help: str, **metadata):
    """A dataclass field that is also a documented command-line flag (metadata: choices, type, metavar, unset)."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def add_dataclass_args(parser, cls, **defaults) -> None:
    """One --flag per dataclass field, typed from its annotation; `defaults` override the dataclass's.
    A field's help is its `metadata["help"]`; choices, type and metavar come from the metadata too, and
    `metadata["unset"]` says what a None default means (shown as the default only while it is None), and
    `metadata["declared_by"]` is a function that adds a flag declared elsewhere (one that several commands share)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        default = defaults.get(field.name, field.default)
        kind, meta = hints[field.name], dict(field.metadata)
        if "declared_by" in meta:
            meta["declared_by"](parser)
            continue
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



@dataclass(frozen=True)
class TrainConfig:
    epochs: int = flag(3, "training epochs")
    lr: float = flag(5e-5, "the encoder's peak learning rate")
    head_lr: Optional[float] = flag(None, "the heads' learning rate", unset="--lr")
    layer_lr_decay: float = flag(1.0, "layer-wise lr decay: encoder layer i of L at lr·d^(L−i), embeddings lr·d^(L+1), "
                                      "heads unchanged (1: off; tasks/engine/param_groups.py)")
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
                               "that changes the training must be as the checkpoint has it (tasks/launch/run_lock.py)")
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
