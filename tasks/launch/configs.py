"""The model's and the data's flags as frozen dataclasses, like the loop's TrainConfig (tasks/engine/config.py):
each field one documented --flag, generated into argparse by `add_dataclass_args`; `tasks/launch/run.py` builds the
configs from the parsed flags and reads them, not the Namespace. The flags several commands share (--model,
--data_dir, --predictions_dir) are declared once in tasks/launch/cli.py and named here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .cli import SHARED_FLAGS, add_shared_flag
from ..engine.config import flag
from ..domain.model import POOLINGS


def shared(name: str):
    """A field whose flag is tasks/launch/cli.py's shared declaration."""
    return flag(SHARED_FLAGS[name]["default"], SHARED_FLAGS[name]["help"],
                declared_by=lambda parser: add_shared_flag(parser, name))


@dataclass(frozen=True)
class ModelConfig:
    model: Optional[str] = shared("model")
    option: str = flag("finetune", "pretrain: freeze the encoder, train the heads only; finetune: update everything",
                       choices=("pretrain", "finetune"))
    hidden_dropout_prob: float = flag(0.1, "dropout in the encoder's layers and on each head's input")
    pooling: str = flag("mean", "the sentence vector: the mean of the token vectors, [CLS]'s, or the pooler's "
                                "tanh(W h_CLS)", choices=POOLINGS)
    max_length: int = flag(128, "tokens per sentence (or per joined pair)")
    attn_implementation: str = flag("sdpa", "sdpa: torch's fused attention; manual: the written-out softmax(q kᵀ/√d) v",
                                    choices=("sdpa", "manual"))
    gradient_checkpointing: bool = flag(False, "recompute each layer's activations in the backward pass: less memory, "
                                               "more time")
    reinit_layers: int = flag(0, "draw the top K encoder layers afresh before fine-tuning (tasks/engine/param_groups.py)")
    head_dropout_samples: int = flag(1, "multi-sample dropout: in training, each head's output is the mean over K "
                                        "dropout masks")


@dataclass(frozen=True)
class DataConfig:
    data_dir: str = shared("data_dir")
    max_examples: Optional[int] = flag(None, "train and evaluate on a fixed random N rows of each file, for quick runs; "
                                             "test: every row (default: every row)")
    batch_size: int = flag(32, "examples per training batch")
    predictions_dir: str = shared("predictions_dir")
    predict_test: bool = flag(True, "also predict the unlabelled test split (off: dev only, e.g. for ablations)")
    select_on: str = flag("dev", "what picks the best epoch: dev (the coursework's way), or a fixed held-out share of "
                                 "the training rows, so that dev only reports (tasks/ablate.py's fair protocol)",
                          choices=("dev", "heldout"))
    heldout_fraction: float = flag(0.1, "(--select_on heldout) share of training rows held out")
