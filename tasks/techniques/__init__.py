"""The fine-tuning techniques, one module each, and the one registry the CLIs are built from.

    pcgrad.py        PCGrad gradient surgery between tasks          a callback: combine_losses, on_evaluate
    child_tuning.py  Child-Tuning-F / -D gradient masks             a callback: on_fit_start, on_before_update
    ema.py           a moving average of the weights                a callback: on_after_update, evaluated_model
    checkpoint_average.py  the mean of the last K evaluations' weights   a callback: evaluated_model
    adversarial.py   contrastive adversarial training (CAT)         wraps the processors' loss
    rdrop.py         R-Drop: two dropout passes, symmetric KL       wraps the processors' loss
    mnrl.py          in-batch negatives on Quora's duplicates       wraps the paraphrase processor (batches, loss)
    phases.py        DAE → contrastive → fine-tune (dae.py, contrastive.py are its phases)   trains before fine-tuning

Each declares itself once (base.py: its `Config` dataclass of flags, the CLIs that offer it, its ablation arms,
the techniques it excludes). `tasks/launch/run.py` adds the flags of the techniques a CLI offers and checks them here
(`conflicts`), `tasks/ablate.py` and `tasks/levers.py` take the arms, `gan/train.py` the flags.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List

from ..engine.callbacks import Callback
from ..engine.config import add_dataclass_args
from .adversarial import AdversarialTechnique
from .base import RunParts, Technique
from .checkpoint_average import CheckpointAverageTechnique
from .child_tuning import ChildTuningTechnique
from .ema import EMATechnique
from .mnrl import MNRLTechnique
from .pcgrad import PCGradTechnique
from .phases import PhasesTechnique
from .rdrop import RDropTechnique

# wrap_processors runs in this order, so a later wrapper sits outside an earlier one (MNRL outermost)
REGISTRY: Dict[str, Technique] = {t.name: t for t in (PCGradTechnique(), ChildTuningTechnique(), EMATechnique(),
                                                      CheckpointAverageTechnique(), AdversarialTechnique(),
                                                      PhasesTechnique(), RDropTechnique(), MNRLTechnique())}


def offered(cli: str) -> List[Technique]:
    return [t for t in REGISTRY.values() if cli in t.clis]


def add_technique_args(parser, cli: str) -> None:
    """Each technique the CLI offers, its flags in a group of their own."""
    for t in offered(cli):
        add_dataclass_args(parser.add_argument_group(f"{t.name}: {t.summary}"), t.Config)


def conflicts(args) -> List[str]:
    """What the parsed flags ask for that cannot run: a technique's flags out of range or not fitting the run's
    tasks (its Config's and its own check), then the pairs of switched-on techniques that one of them excludes.
    A technique whose flags this CLI does not have is left out."""
    problems, on = [], set()
    for t in REGISTRY.values():
        if not all(hasattr(args, f.name) for f in dataclasses.fields(t.Config)):
            continue
        try:
            cfg = t.config(args)
        except ValueError as err:
            problems.append(str(err))
            continue
        problems += [p for p in [t.check(cfg, getattr(args, "tasks", None) or ())] if p]
        if t.enabled(cfg):
            on.add(t.name)
    return problems + [why for t in REGISTRY.values() if t.name in on
                       for other, why in t.excludes.items() if other in on]


def before_finetuning(configs: Dict[str, object], parts: RunParts) -> Dict[str, float]:
    """Each technique's work before fine-tuning (the phases; most do none), in registry order; their scores."""
    scores = {}
    for t in REGISTRY.values():
        if t.name in configs:
            scores.update(t.before_finetuning(configs[t.name], parts))
    return scores


def finetunes(configs: Dict[str, object]) -> bool:
    """Whether the run goes on to fine-tuning (not: a phases-only run, which saves the encoder instead)."""
    return all(t.finetunes(configs[t.name]) for t in REGISTRY.values() if t.name in configs)


def callbacks(configs: Dict[str, object], model, seed: int) -> List[Callback]:
    """The loop's callbacks these techniques' configs switch on, in registry order."""
    found = [t.callback(configs[t.name], model, seed) for t in REGISTRY.values() if t.name in configs]
    return [c for c in found if c is not None]


def wrap_processors(configs: Dict[str, object], model, processors: Dict[str, object]) -> Dict[str, object]:
    """The processors wrapped by each technique that changes a task's data or loss, in registry order."""
    for t in REGISTRY.values():
        if t.name in configs:
            processors = t.wrap_processors(configs[t.name], model, processors)
    return processors


def arms() -> Dict[str, tuple]:
    """Every ablation arm of every technique: name -> (flags, what it is); 'plain' is none of them."""
    table = {"plain": ((), "plain fine-tuning")}
    for t in REGISTRY.values():
        table.update(t.arms)
    return table
