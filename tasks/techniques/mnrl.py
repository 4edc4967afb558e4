"""In-batch negatives for paraphrase: MultipleNegativesRankingLoss on each Quora batch's duplicate pairs.

sentence-transformers' recipe for Quora duplicates: the duplicate pairs (a_i, b_i) of a batch are embedded
one sentence at a time (`model.embed`, the model's pooling: mean by default), and each a_i must pick its b_i
out of all the batch's b by scaled cosine similarity (cross-entropy with the diagonal as the target;
tasks/domain/losses.py, `mnrl_loss`). The other b are the negatives: questions on other topics, which costs no
labelling. The term is added to the paraphrase loss, beside whichever head classifies the pair:

    L_para = L_head + w · MNRL(a, b)      w = --para_mnrl_weight (0: off)

Two b of one batch that share a question with a_i's pair (the same question twice, or after
--para_augment) are paraphrases of a_i, not negatives: they are left out of a_i's row. A batch with fewer
than two duplicate pairs adds nothing. Cost: one more encoder pass over each sentence of each duplicate
pair (37% of Quora's training pairs), so about 40% more tokens through the encoder on a Quora step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator

import torch

from ..domain.losses import mnrl_loss
from ..domain.para_augment import normalize_question
from ..engine.config import flag
from .base import ProcessorWrapper, Technique

KEYS = ("input_ids", "token_type_ids", "attention_mask")


@dataclass(frozen=True)
class MNRLConfig:
    para_mnrl_weight: float = flag(0.0, "weight of in-batch negatives (MultipleNegativesRankingLoss) over each Quora "
                                        "batch's duplicate pairs, added to the paraphrase loss (0: off)")
    para_mnrl_scale: float = flag(20.0, "scale of the cosine similarities in that loss (sentence-transformers: 20)")
    para_mnrl_symmetric: bool = flag(False, "also rank each b against every a, and average the two directions")


def shared_question_mask(a: list, b: list) -> torch.Tensor:
    """(N, N) bool: True off the diagonal where pairs i and j share a (normalised) question, so b_j is a
    paraphrase of a_i rather than a negative."""
    sets = [{normalize_question(x), normalize_question(y)} for x, y in zip(a, b)]
    n = len(sets)
    return torch.tensor([[i != j and bool(sets[i] & sets[j]) for j in range(n)] for i in range(n)], dtype=torch.bool)


class MNRLProcessor(ProcessorWrapper):
    """The paraphrase processor's batches, plus its duplicate pairs tokenised one sentence at a time
    (keys mnrl_input_ids_1, ..., mnrl_exclude); its loss plus weight · MNRL over them."""

    def __init__(self, base, weight: float, scale: float = 20.0, symmetric: bool = False):
        super().__init__(base)
        if weight < 0 or scale <= 0:
            raise ValueError(f"need para_mnrl_weight >= 0 and para_mnrl_scale > 0, got {weight}, {scale}")
        self.weight, self.scale, self.symmetric = weight, scale, symmetric
        inner = self.innermost
        self.tokenizer, self.max_length = inner.tokenizer, inner.max_length
        self._examples = None  # id -> example, built on first use (augmentation may add examples before)

    def with_pairs(self, batch: dict) -> dict:
        """The batch with its duplicate pairs' sentences tokenised alone (when it has two or more)."""
        if self._examples is None:
            self._examples = {e.id: e for e in self.innermost.splits["train"]}
        pairs = [self._examples[i] for i, y in zip(batch["ids"], batch["labels"].tolist()) if y == 1]
        if len(pairs) < 2:
            return batch
        a, b = [e.sentence1 for e in pairs], [e.sentence2 for e in pairs]
        batch = dict(batch)
        for side, texts in (("1", a), ("2", b)):
            enc = self.tokenizer(texts, max_length=self.max_length)
            batch.update({f"mnrl_{k}_{side}": enc[k] for k in KEYS})
        batch["mnrl_exclude"] = shared_question_mask(a, b)
        return batch

    def batches(self, epoch: int) -> Iterator[dict]:
        return (self.with_pairs(batch) for batch in self.base.batches(epoch))

    def mnrl(self, model, batch) -> torch.Tensor:
        a, b = (model.embed(*(batch[f"mnrl_{k}_{side}"] for k in ("input_ids", "attention_mask", "token_type_ids")))
                for side in ("1", "2"))
        return mnrl_loss(a.float(), b.float(), self.scale, self.symmetric, batch["mnrl_exclude"])

    def loss(self, model, batch) -> torch.Tensor:
        loss = self.base.loss(model, batch)
        if "mnrl_input_ids_1" not in batch:
            return loss
        return loss + self.weight * self.mnrl(model, batch)


class MNRLTechnique(Technique):
    name, summary, Config = "mnrl", "in-batch negatives on Quora's duplicate pairs (MNRL)", MNRLConfig
    clis = ("multitask",)  # Quora: the classifier CLI (and so the ablation runner) has no paraphrase task

    def enabled(self, cfg: MNRLConfig) -> bool:
        return cfg.para_mnrl_weight != 0

    def wrap_processors(self, cfg: MNRLConfig, model, processors: Dict[str, object]) -> Dict[str, object]:
        if cfg.para_mnrl_weight == 0:
            return processors
        if "para" not in processors:
            raise ValueError("--para_mnrl_weight trains the paraphrase task: add para to --tasks")
        return {**processors, "para": MNRLProcessor(processors["para"], cfg.para_mnrl_weight, cfg.para_mnrl_scale,
                                                    cfg.para_mnrl_symmetric)}
