"""DAE → contrastive → fine-tune (López-Ávila & Suárez-Paniagua 2024) on the one shared training loop.

    python tasks/classifier.py --tasks sst --phases dae,contrastive,finetune     # the three phases, one command
    python tasks/classifier.py --tasks sst --phases dae                          # one phase alone: writes
        runs/classifier/sst-finetune/encoder/, a checkpoint folder for the next --model

Each phase before fine-tuning is a `Trainer` run of its own over a wrapper that shares the encoder object with
the fine-tuning model (the DAE: encoder + decoder; contrastive: encoder + pooling), so fine-tuning starts
from the weights the phases leave. Each phase keeps its best epoch by dev loss (the paper selects each
phase's model on the validation set; under --select_on heldout, on the held-out training rows), and writes
its metrics.jsonl and checkpoints under <out_dir>/phase-<name>/; `--resume` skips a finished phase.

Budget: the phases are extra passes over the same training data (no other data). `--epochs` counts only
fine-tuning epochs, so "same budget" means the same fine-tuning; `--dae_epochs` and `--contrastive_epochs`
are reported beside the scores (tasks/ablate.py puts them, and the wall time, in its table).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
import shutil
from pathlib import Path
from typing import Dict, Tuple

import torch

from minibert import resolve_model_dir

from ..engine import Trainer, flag
from ..engine.checkpointing import load_state
from ..engine.devices import to_device
from ..domain.model import MultitaskBert, reference_head
from .base import RunParts, Technique
from .contrastive import LOSSES, ContrastiveProcessor, freeze_encoder
from .dae import DenoisingAutoencoder, DenoisingProcessor, masked_lm_around

PHASES = ("dae", "contrastive", "finetune")


def parse_phases(text: str) -> Tuple[str, ...]:
    """'dae,contrastive,finetune' -> a tuple, checked: known names, each once, in the paper's order."""
    phases = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in phases if p not in PHASES]
    if unknown or not phases:
        raise argparse.ArgumentTypeError(f"phases must be a comma-separated subset of {','.join(PHASES)}, got {text!r}")
    if list(phases) != sorted(set(phases), key=PHASES.index):
        raise argparse.ArgumentTypeError(f"phases must appear once each, in the order {' → '.join(PHASES)}; got {text!r}")
    return phases


@dataclass(frozen=True)
class PhasesConfig:
    phases: Tuple[str, ...] = flag(("finetune",), "comma-separated, in order: dae,contrastive,finetune (without "
                                   "finetune: save the encoder)", type=parse_phases)
    phase_lr: float = flag(1e-4, "encoder learning rate of both phases (one, as the reference: 1e-4)")
    phase_head_lr: float = flag(1e-4, "learning rate of the DAE decoder / MLM head")
    phase_dev_examples: int = flag(1000, "dev examples for each phase's dev loss")
    dae_epochs: int = flag(6, "epochs of the DAE phase (the reference: 12; 6 helped in docs/techniques.md)")
    dae_objective: str = flag("tsdae", "tsdae: delete words, reconstruct from the sentence vector; mlm: masked-language "
                                       "model", choices=("tsdae", "mlm"))
    dae_deletion_ratio: float = flag(0.6, "(tsdae) share of words deleted")
    dae_mask_prob: float = flag(0.15, "(mlm) share of tokens masked")
    dae_tie_encoder_decoder: bool = flag(True, "(tsdae) the decoder is the encoder's own layers, full depth with shared "
                                               "weights, plus cross-attention, as TSDAE; off: a separate decoder")
    dae_decoder_layers: int = flag(1, "(tsdae, untied decoder only) decoder layers")
    dae_decoder_init: str = flag("encoder", "(untied decoder only) start the decoder's layers from the encoder's top "
                                            "layers, or at random", choices=("encoder", "random"))
    contrastive_epochs: int = flag(1, "epochs of the contrastive phase")
    contrastive_loss: str = flag("cosine_mse", "the contrastive phase's loss", choices=LOSSES)
    contrastive_temperature: float = flag(0.1, "(supcon) temperature τ")
    contrastive_augmentation: int = flag(4, "(contrastive) pairs per example before balancing = this × ⌊log₂ classes⌋ "
                                            "(the reference: 12; 4 helped in docs/techniques.md; 1 costs about what the "
                                            "old phase did)")
    contrastive_balance_pairs: bool = flag(True, "(contrastive) cut same- and different-class pairs to equal counts, as "
                                                 "the reference")
    imbalance_correction: bool = flag(True, "repeat a class round(f) times where f ≥ --imbalance_min_ratio (the "
                                            "reference's threshold rule)")
    imbalance_min_ratio: float = flag(1.5, "the log-ratio formula's lower bound")
    imbalance_max_ratio: float = flag(4.0, "the log-ratio formula's upper bound")
    stopword_p: float = flag(0.0, "chance of deleting each stop word of a resized class's extra copies (0: exact copies, "
                                  "as the reference)")
    finetune_encoder: str = flag("full", "after the phases, full: fine-tune the encoder; frozen: freeze it (no gradient, "
                                         "no dropout) and train the reference's head, as the paper's third phase",
                                 choices=("full", "frozen"))


# ---- what each phase trains on ----------------------------------------------------------------------------

def _sentences(processor, split: str):
    for e in processor.splits[split]:
        yield from ([e.sentence] if hasattr(e, "sentence") else [e.sentence1, e.sentence2])


def _labelled(processors: Dict[str, object], split: str):
    """(sentence, class) of the sentence-classification tasks; a class is task:label when there are several."""
    names = [n for n, p in processors.items() if p.task.num_classes and not p.task.pair]
    if not names:
        raise ValueError(f"the contrastive phase needs a sentence-classification task (sst, cfimdb); got {list(processors)}")
    return [(e.sentence, e.label if len(names) == 1 else f"{n}:{e.label}") for n in names for e in processors[n].splits[split]]


def _dae_phase(cfg: PhasesConfig, parts: RunParts):
    model = parts.model
    train = [s for p in parts.processors.values() for s in _sentences(p, "train")]
    dev = [s for p in parts.selection.values() for s in _sentences(p, "dev")][:cfg.phase_dev_examples]
    proc = DenoisingProcessor(train, parts.tokenizer, cfg.dae_objective, cfg.dae_deletion_ratio, cfg.dae_mask_prob,
                              parts.batch_size, parts.max_length, parts.train_config.seed, dev)
    if cfg.dae_objective == "mlm":
        return masked_lm_around(model.bert, parts.checkpoint), proc
    return DenoisingAutoencoder(model.bert, model.pooling, cfg.dae_decoder_layers,
                                init_from_encoder=cfg.dae_decoder_init == "encoder",
                                tie_encoder_decoder=cfg.dae_tie_encoder_decoder), proc


def _contrastive_phase(cfg: PhasesConfig, parts: RunParts):
    proc = ContrastiveProcessor(_labelled(parts.processors, "train"), parts.tokenizer, cfg.contrastive_loss,
                                cfg.contrastive_temperature, cfg.imbalance_correction, cfg.imbalance_min_ratio,
                                cfg.imbalance_max_ratio, cfg.stopword_p, parts.batch_size, parts.max_length,
                                parts.train_config.seed, _labelled(parts.selection, "dev")[:cfg.phase_dev_examples],
                                augmentation=cfg.contrastive_augmentation, balance_pairs=cfg.contrastive_balance_pairs)
    encoder = MultitaskBert(parts.model.bert, tasks=(), pooling=parts.model.pooling)  # with pooling, no heads
    return encoder, proc


BUILDERS = {"dae": _dae_phase, "contrastive": _contrastive_phase}  # phase -> (wrapper model, processor)


def build_phase(phase: str, cfg: PhasesConfig, parts: RunParts):
    """(wrapper model sharing parts.model.bert, processor) of one phase. Its dev loss (which picks the phase's best
    epoch) is read on the "dev" split of `parts.selection`: the held-out training rows under --select_on heldout."""
    if phase not in BUILDERS:
        raise ValueError(f"unknown phase {phase!r}")
    return BUILDERS[phase](cfg, parts)


def dev_loss(model, processor, device) -> float:
    """Mean loss over the phase's dev batches, in eval mode (NaN when there are none)."""
    was_training, total, count = model.training, 0.0, 0
    model.eval()
    with torch.no_grad():
        for batch in processor.dev_batches():
            total += processor.loss(model, to_device(batch, device)).item()
            count += 1
    model.train(was_training)
    return total / count if count else math.nan


# ---- running them -----------------------------------------------------------------------------------------

def _phase_evaluator(processor):
    """The phase's `evaluate` for the Trainer: score = −dev loss (without dev examples, the latest epoch wins)."""
    epochs = 0

    def evaluate(model) -> Dict[str, float]:
        nonlocal epochs
        epochs += 1
        loss = dev_loss(model, processor, next(model.parameters()).device)
        return {"score": -loss if math.isfinite(loss) else float(epochs), "dev_loss": loss}
    return evaluate


def run_phases(cfg: PhasesConfig, parts: RunParts) -> Dict[str, float]:
    """Train parts.model.bert in place through each phase before fine-tuning. Returns {"<phase>_dev_loss": best},
    each read on the dev split of parts.selection (the fine-tuning's selection rows)."""
    results, model, config = {}, parts.model, parts.train_config
    phases = [p for p in cfg.phases if p != "finetune"]
    frozen = [p for p in model.bert.parameters() if not p.requires_grad]  # --option pretrain freezes for the last phase only
    for p in frozen:
        p.requires_grad = True
    for phase in phases:
        wrapper, proc = build_phase(phase, cfg, parts)
        out_dir = Path(config.out_dir) / f"phase-{phase}"
        phase_config = dataclasses.replace(
            config, epochs=getattr(cfg, f"{phase}_epochs"), lr=cfg.phase_lr, head_lr=cfg.phase_head_lr,
            out_dir=str(out_dir), task_sampling="proportional", tasks_per_step=0, eval_every=0, patience=0,
            layer_lr_decay=1.0)  # LLRD is a fine-tuning lever: the phases train every layer at their lr
        print(f"--- phase {phase}: {len(proc)} training examples, {proc.num_batches()} batches per epoch, "
              f"{phase_config.epochs} epoch(s)")
        evaluate = _phase_evaluator(proc)
        trainer = Trainer(wrapper, {phase: proc}, phase_config, evaluate)
        trainer.fit()
        best = load_state(out_dir / "best.safetensors")
        wrapper.load_state_dict(best["model"])  # the phase's best epoch; model.bert is wrapper.bert
        results[f"{phase}_dev_loss"] = best["scores"]["dev_loss"]
    for p in frozen:
        p.requires_grad = False
    return results


def prepare_finetune(cfg: PhasesConfig, model) -> None:
    """--finetune_encoder frozen: the reference's third phase, a head on a frozen encoder (no gradient, no
    dropout); the sentiment head becomes the reference's, which has its own dropout."""
    if cfg.finetune_encoder != "frozen":
        return
    if set(model.heads) - {"sentiment"}:
        raise ValueError("--finetune_encoder frozen trains the reference's sentiment head: use it with sst or cfimdb")
    freeze_encoder(model.bert)
    model.heads["sentiment"] = reference_head(model.bert.config.hidden_size, model.num_labels)
    model.sentiment_head = "reference"  # saved with the heads, so that from_pretrained rebuilds this head
    model.drop.p = 0.0


def save_encoder(encoder, source_checkpoint, folder) -> Path:
    """The encoder as a checkpoint folder (weights + config + the source's tokenizer files) for the next --model."""
    folder = Path(folder)
    encoder.save_pretrained(folder)
    source = resolve_model_dir(source_checkpoint)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)
    return folder


class PhasesTechnique(Technique):
    name, summary, Config = "phases", "DAE → contrastive → fine-tune (López-Ávila & Suárez-Paniagua 2024)", PhasesConfig
    clis = ("multitask", "classifier")
    arms = {"dae": (("--phases", "dae,finetune"), "TSDAE phase, then fine-tuning"),
            "mlm": (("--phases", "dae,finetune", "--dae_objective", "mlm"), "MLM phase, then fine-tuning"),
            "contrastive": (("--phases", "contrastive,finetune"), "supervised contrastive phase, then fine-tuning"),
            "supcon": (("--phases", "contrastive,finetune", "--contrastive_loss", "supcon"), "SupCon phase, then fine-tuning"),
            "3phase": (("--phases", "dae,contrastive,finetune"), "DAE → contrastive → fine-tune")}

    def before_finetuning(self, cfg: PhasesConfig, parts: RunParts) -> Dict[str, float]:
        scores = run_phases(cfg, parts)
        if self.finetunes(cfg):
            prepare_finetune(cfg, parts.model)  # --finetune_encoder frozen: the paper's third phase
        elif parts.is_main:  # phases only: the encoder is what the run leaves
            folder = save_encoder(parts.model.bert, parts.checkpoint, Path(parts.train_config.out_dir) / "encoder")
            print(f"phases {', '.join(cfg.phases)} done; encoder saved to {folder} (pass it as --model)")
        return scores

    def finetunes(self, cfg: PhasesConfig) -> bool:
        return "finetune" in cfg.phases
