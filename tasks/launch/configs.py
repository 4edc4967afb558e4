"""The model's and the data's flags as frozen dataclasses, like the loop's TrainConfig (tasks/engine/config.py):
each field one documented --flag, generated into argparse by `add_dataclass_args`. RunConfig holds all of a run's
configs (training, model, data, each technique's), made from the parsed flags at the command line's edge;
`tasks/launch/run.py` reads them, not the Namespace. The flags several commands share (--model,
--data_dir, --predictions_dir) are declared once in tasks/launch/cli.py and named here."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from .cli import SHARED_FLAGS, add_shared_flag
from .. import techniques
from ..engine.config import TrainConfig, flag
from ..domain.model import PARA_HEADS, POOLINGS, STS_COSINE_MAPS, STS_HEADS
from ..domain.para_augment import AUGMENTS
from ..techniques.phases import PhasesConfig


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



@dataclass(frozen=True)
class HeadsConfig:
    """The multitask run's heads and task losses (tasks/multitask.py's flags; the classifier uses the defaults)."""
    para_head: str = flag("cross", "Quora's head: cross = a linear layer on [CLS] a [SEP] b [SEP]; siamese = an MLP on "
                                   "[u; v; |u−v|; u∗v] of the two sentence vectors; cross+siamese = the mean of both",
                          choices=PARA_HEADS)
    sts_head: str = flag("cosine", "STS's head: the cosine of the two sentence vectors, or a linear layer on the joined "
                                   "pair", choices=STS_HEADS)
    sts_loss: str = flag("mse", "STS's loss: MSE on the 0–1 scale, or MSE plus (1 − the batch's Pearson r)",
                         choices=("mse", "mse+corr"))
    sts_cosine_map: str = flag("clamp", "the cosine head's 0–5 score: clamp = 5·clamp(cos, 0, 1); affine = "
                                        "5·(cos + 1)/2, in the loss's target space and in the predictions",
                               choices=STS_COSINE_MAPS)
    para_augment: str = flag("none", "extra Quora training pairs: each pair reversed, and/or duplicates by "
                                     "transitivity; never with a dev/test question (tasks/domain/para_augment.py)",
                             choices=AUGMENTS)
    para_augment_cap: int = flag(20, "at most this many transitive pairs per group of duplicates (negative: no cap)")
    symmetric_pairs: bool = flag(False, "train on each pair in a random order per epoch and predict from the mean over "
                                        "both orders")

def _build(cls, flags: Dict[str, Any]):
    return cls(**{f.name: flags[f.name] for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run reads, typed, made once from the parsed flags where the command line ends
    (`from_args`): below it nothing reads an argparse Namespace. `flags` keeps every flag's value as parsed: what
    run_config.json, the checkpoint's meta and --resume's check record."""
    cli: str  # the command: which techniques it offers
    train: TrainConfig
    model: ModelConfig
    data: DataConfig
    techniques: Dict[str, Any]  # each offered technique's Config, by name, in registry order
    flags: Dict[str, Any] = field(repr=False)

    @classmethod
    def from_args(cls, args: argparse.Namespace, cli: str) -> "RunConfig":
        return cls.from_flags(cli, {k: v for k, v in vars(args).items() if k != "config"})

    @classmethod
    def from_flags(cls, cli: str, flags: Dict[str, Any]) -> "RunConfig":
        return cls(cli, _build(TrainConfig, flags), _build(ModelConfig, flags), _build(DataConfig, flags),
                   {t.name: _build(t.Config, flags) for t in techniques.offered(cli)}, dict(flags))

    def with_flags(self, **changes) -> "RunConfig":
        """The same run with some flags changed (a cell's folder, the encoder a phase left): every config rebuilt."""
        unknown = set(changes) - set(self.flags)
        if unknown:
            raise KeyError(f"not flags of this run: {sorted(unknown)}")
        return RunConfig.from_flags(self.cli, {**self.flags, **changes})

    def of(self, cls):
        """Another dataclass of this command's flags (e.g. gan/train.py's GanConfig)."""
        return _build(cls, self.flags)

    @property
    def phases(self) -> PhasesConfig:
        return self.techniques.get("phases") or PhasesConfig()
