"""Contrastive adversarial training, CAT (Pan et al., AAAI 2022), as a wrapper around any task's processor.

Each training batch is seen twice, clean and adversarial, and the two sentence vectors are pulled together:

    1. clean pass: task loss CE_clean, sentence vectors h (B, C)
    2. g = ∂CE_clean/∂E for the word-embedding matrix E (V, C); FGM: r = ε · g / ‖g‖₂  (‖r‖₂ = ε)
    3. adversarial pass with E + r: CE_adv and h_adv
    4. L = (1 − λ)/2 · (CE_clean + CE_adv) + λ · InfoNCE(proj(h), proj(h_adv); τ)

The matrix itself is never written to: a forward hook on the embedding adds r's rows to the looked-up
vectors, word(ids) + r[ids], which is bit for bit (E + r)[ids]. So E is exactly its old value after the
step, and r, computed by `torch.autograd.grad` without a graph, is a constant: no gradient flows through it,
and computing it leaves no `.grad` on any parameter. The projection head (Linear, ReLU, Linear, as in
SimCLR) is one new head per task, `heads["cat_<task>"]`, trained with the heads' learning rate.

The wrapper needs nothing from the model but `model.embed` (every head goes through it; it is watched
during the task loss to collect the sentence vectors, two per pair for Siamese heads) and
`model.bert.embeddings.word`, so it works for every task and head of `tasks/domain/model.py`.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..domain.losses import cat_loss, info_nce
from ..engine.config import flag
from .base import Technique


@dataclass(frozen=True)
class AdversarialConfig:
    adversarial: bool = flag(False, "FGM on the word embeddings + InfoNCE between clean and adversarial sentence vectors")
    # the paper's values were not found; these were chosen from ε {0.3, 1} × λ {0.1, 0.5} × τ {0.05, 0.3} on
    # held-out SST-5 training rows (docs/techniques.md, session 7); before, ε = 1, λ = 0.5, τ = 0.05
    adv_epsilon: float = flag(0.3, "‖r‖₂ of the word-embedding perturbation")
    adv_lambda: float = flag(0.1, "weight λ of the contrastive loss")
    adv_temperature: float = flag(0.3, "InfoNCE temperature τ")
    adv_projection_dim: int = flag(128, "output size of the projection head")
    # the multitask run's cost is then only the named tasks' share of the steps (issue #24: CAT on SST alone)
    adv_tasks: str = flag("", "comma-separated tasks whose batches get CAT, e.g. 'sst'; the others train as without "
                              "--adversarial (default: every task)")


def adversarial_tasks(cfg, tasks) -> List[str]:
    """The tasks --adv_tasks names, in the run's order (all of them when it is empty); an unknown name is an error."""
    named = [t.strip() for t in (getattr(cfg, "adv_tasks", "") or "").split(",") if t.strip()]
    unknown = [t for t in named if t not in tasks]
    if unknown:
        raise ValueError(f"--adv_tasks: unknown task {unknown[0]!r}; this run's tasks are {', '.join(tasks)}")
    return [t for t in tasks if t in named] if named else list(tasks)


def fgm_perturbation(grad: torch.Tensor, epsilon: float) -> torch.Tensor:
    """r = ε · g / ‖g‖₂ over the whole tensor (zero if g is); detached, so a constant for autograd."""
    grad = grad.detach()
    norm = torch.linalg.vector_norm(grad.float())
    if norm == 0 or not torch.isfinite(norm):
        return torch.zeros_like(grad)
    return (epsilon * grad.float() / norm).to(grad.dtype)


@contextmanager
def perturbed_embeddings(word: nn.Embedding, r: torch.Tensor):
    """Inside the block, word(ids) returns (E + r)[ids] computed as E[ids] + r[ids]; E is not touched."""
    handle = word.register_forward_hook(lambda module, inputs, out: out + F.embedding(inputs[0], r.to(out.dtype)))
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def captured_sentence_vectors(model: nn.Module):
    """Collect every (B, C) that model.embed returns inside the block (an instance attribute shadows the method)."""
    captured: List[torch.Tensor] = []
    original = model.embed

    def embed(*args, **kwargs):
        h = original(*args, **kwargs)
        captured.append(h)
        return h

    model.embed = embed
    try:
        yield captured
    finally:
        del model.embed


def projection_head(in_dim: int, hidden: int, out_dim: int) -> nn.Module:
    head = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
    for m in head:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
    return head


class AdversarialProcessor:
    """Wraps a task processor: same batches, the CAT loss instead of the task loss."""

    def __init__(self, base, name: str, epsilon: float, lam: float, temperature: float,
                 vectors_per_example: int = 1):
        if epsilon < 0 or not 0.0 <= lam <= 1.0 or temperature <= 0:
            raise ValueError(f"need epsilon >= 0, 0 <= lambda <= 1, temperature > 0; got {epsilon}, {lam}, {temperature}")
        self.base, self.name, self.epsilon, self.lam, self.temperature = base, name, epsilon, lam, temperature
        self.vectors_per_example = vectors_per_example
        self.last_perturbation = None  # r of the last step, (V, C), kept for inspection and tests

    @property
    def loss_weight(self) -> float:  # the task's weight (multitask: --sts_loss_weight 10) scales its CAT loss too
        return getattr(self.base, "loss_weight", 1.0)

    @property
    def head_name(self) -> str:
        return f"cat_{self.name}"

    def num_batches(self) -> int:
        return self.base.num_batches()

    def batches(self, epoch: int) -> Iterator[dict]:
        return self.base.batches(epoch)

    def _pass(self, model, batch):
        with captured_sentence_vectors(model) as vectors:
            loss = self.base.loss(model, batch)
        if len(vectors) != self.vectors_per_example:
            raise RuntimeError(f"{self.name}: expected {self.vectors_per_example} sentence vector(s) per example, "
                               f"the task loss produced {len(vectors)}")
        return loss, torch.cat(vectors, dim=-1)  # (B, k·C)

    def loss(self, model, batch) -> torch.Tensor:
        word = model.bert.embeddings.word
        if not word.weight.requires_grad:
            raise ValueError("--adversarial perturbs the word embeddings along their gradient: it needs a trainable "
                             "encoder (--option finetune)")
        ce_clean, h_clean = self._pass(model, batch)
        (g,) = torch.autograd.grad(ce_clean, word.weight, retain_graph=True)  # (V, C); no .grad is written
        r = fgm_perturbation(g, self.epsilon)
        self.last_perturbation = r
        with perturbed_embeddings(word, r):
            ce_adv, h_adv = self._pass(model, batch)
        project = model.heads[self.head_name]
        contrastive = info_nce(project(h_clean).float(), project(h_adv).float(), self.temperature)
        return cat_loss(ce_clean, ce_adv, contrastive, self.lam)


def adversarial_processors(args, model: nn.Module, processors: Dict[str, object]) -> Dict[str, object]:
    """The processors to train with: unchanged without --adversarial; else each of --adv_tasks' (every task by
    default) wrapped, and a projection head per wrapped task added to `model.heads` (before the Trainer builds
    its optimizer)."""
    if not getattr(args, "adversarial", False):
        return processors
    if getattr(args, "option", "finetune") == "pretrain" or not model.bert.embeddings.word.weight.requires_grad:
        raise ValueError("--adversarial needs --option finetune: it perturbs the (then frozen) word embeddings")
    C = model.bert.config.hidden_size
    chosen = adversarial_tasks(args, list(processors))
    wrapped = dict(processors)  # a task not in --adv_tasks keeps its own processor: its loss is exactly base's
    for name in chosen:
        proc = processors[name]
        # sentence vectors per example: Siamese heads embed each sentence alone, a cross-encoder the joined pair
        k = {"siamese": 2, "cross+siamese": 3}.get(getattr(proc, "form", "cross"), 1)
        wrapped[name] = AdversarialProcessor(proc, name, args.adv_epsilon, args.adv_lambda, args.adv_temperature, k)
        model.heads[wrapped[name].head_name] = projection_head(k * C, C, args.adv_projection_dim)
    return wrapped


class AdversarialTechnique(Technique):
    name, summary, Config = "adversarial", "contrastive adversarial training (Pan et al. 2022)", AdversarialConfig
    clis = ("multitask", "classifier")
    arms = {"cat": (("--adversarial",), "contrastive adversarial training"),
            "cat_sst": (("--adversarial", "--adv_tasks", "sst"), "CAT on the sentiment batches only")}

    def wrap_processors(self, cfg: AdversarialConfig, model, processors):
        return adversarial_processors(cfg, model, processors)

    def enabled(self, cfg: AdversarialConfig) -> bool:
        return cfg.adversarial

    def check(self, cfg: AdversarialConfig, tasks) -> Optional[str]:
        if cfg.adv_tasks and not cfg.adversarial:
            return "--adv_tasks names the tasks of --adversarial: add --adversarial"
        if tasks and cfg.adversarial:
            try:
                adversarial_tasks(cfg, list(tasks))
            except ValueError as e:
                return str(e)
        return None
