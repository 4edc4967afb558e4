"""The training engine: a model-agnostic loop and what it needs, importing nothing from the task domain, the
techniques or the CLIs above it (tests/test_engine.py checks that).

    trainer.py        Trainer: epochs of steps, evaluation, the best weights, patience
    resumable.py      the Trainer's checkpoints and the exact --resume from one
    progress.py       where training stands (position, running losses, evaluations): what a checkpoint holds
    callbacks.py      the Callback contract: the hooks (on_…) and the two roles, in one list
    config.py         TrainConfig, and flag() / add_dataclass_args: frozen dataclasses that generate argparse
    accelerator.py    Accelerator: device, precision, torch.compile, DDP (wrap, reductions, rank 0, seeds)
    devices.py        pick_device, Precision (autocast + gradient scaler), compile_layers, to_device
    distributed.py    torchrun's process group, the DDP wrapper, reductions
    checkpointing.py  pickle-free safetensors checkpoints, atomic writes, RNG states, jsonl
    sampling.py       the task schedule of an epoch and each task's batch stream
    param_groups.py   AdamW's parameter groups: decay, the heads' lr, layer-wise lr decay
"""
from .accelerator import Accelerator, seed_everything
from .callbacks import Callback
from .config import TrainConfig, add_dataclass_args, dataclass_from_args, flag
from .trainer import Trainer

__all__ = ["Accelerator", "Callback", "TrainConfig", "Trainer", "add_dataclass_args", "dataclass_from_args", "flag",
           "seed_everything"]
