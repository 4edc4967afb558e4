"""One small processor per dataset, all sharing one batching, prediction and scoring path.

A processor owns a task's examples and says three things the shared training loop (`tasks.trainer`) needs:
how to batch its data, its loss on a batch, and how to turn model outputs into predictions. The loop
itself knows nothing about sentiment or paraphrases.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .data import LengthBucketSampler, PairCollator, SentenceCollator, example_lengths, get_task
from .losses import similarity_loss
from .metrics import accuracy, pearson_r, write_predictions


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _text_length(example) -> int:
    return sum(len(getattr(example, field, "")) for field in ("sentence", "sentence1", "sentence2"))


class Processor:
    """Base: `batches` for training, `predict` and `score` for evaluation, `loss` per subclass."""

    def __init__(self, name: str, tokenizer, train: Sequence = (), dev: Sequence = (), test: Sequence = (),
                 batch_size: int = 32, max_length: int = 128, seed: int = 0, eval_batch_size: int = 128):
        self.name, self.task = name, get_task(name)
        self.tokenizer, self.max_length = tokenizer, max_length
        self.splits = {"train": list(train), "dev": list(dev), "test": list(test)}
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self._lengths: Optional[List[int]] = None

    @classmethod
    def from_files(cls, name: str, tokenizer, train=None, dev=None, test=None, max_examples: Optional[int] = None, **kw):
        """Load the given files (paths; None skips a split). `max_examples` keeps the first N of each, for quick runs."""
        task = get_task(name)
        splits = {s: ([] if p is None else task.loader(Path(p))[:max_examples]) for s, p in
                  (("train", train), ("dev", dev), ("test", test))}
        return cls(name, tokenizer, **splits, **kw)

    # ---- batching -------------------------------------------------------------------------------------------
    def collator(self):
        raise NotImplementedError

    def num_batches(self) -> int:
        return -(-len(self.splits["train"]) // self.batch_size)

    def batches(self, epoch: int) -> Iterator[dict]:
        """One shuffled pass over the training data, length-bucketed to cut padding; order fixed by (seed, epoch)."""
        if self._lengths is None:
            self._lengths = example_lengths(self.splits["train"], self.tokenizer, self.max_length)
        sampler = LengthBucketSampler(self._lengths, self.batch_size, shuffle=True, seed=self.seed)
        sampler.set_epoch(epoch)
        return iter(DataLoader(self.splits["train"], batch_sampler=sampler, collate_fn=self.collator()))

    def loss(self, model, batch) -> torch.Tensor:
        raise NotImplementedError

    # ---- evaluation -----------------------------------------------------------------------------------------
    def outputs_to_predictions(self, model, batch) -> list:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, model, split: str = "dev", device="cpu") -> List:
        """Predictions for every example of a split, in file order (batches sorted by length for speed)."""
        examples = self.splits[split]
        order = sorted(range(len(examples)), key=lambda i: _text_length(examples[i]))
        collate, preds = self.collator(), [None] * len(examples)
        was_training = model.training
        model.eval()
        for start in range(0, len(order), self.eval_batch_size):
            idx = order[start:start + self.eval_batch_size]
            batch = to_device(collate([examples[i] for i in idx]), device)
            for i, p in zip(idx, self.outputs_to_predictions(model, batch)):
                preds[i] = p
        model.train(was_training)
        return preds

    def score(self, preds: Sequence, split: str = "dev") -> float:
        gold = [e.label for e in self.splits[split]]
        return pearson_r(preds, gold) if self.task.metric == "pearson" else accuracy(preds, gold)

    def write(self, path, preds: Sequence, split: str) -> None:
        write_predictions(path, self.name, [e.id for e in self.splits[split]], preds)


class SentimentProcessor(Processor):
    """SST-5 / CFIMDB: one sentence -> class; cross-entropy."""

    def collator(self):
        return SentenceCollator(self.tokenizer, self.max_length)

    def loss(self, model, batch):
        return F.cross_entropy(model.sentiment_logits(batch), batch["labels"])

    def outputs_to_predictions(self, model, batch):
        return model.sentiment_logits(batch).argmax(-1).tolist()


class ParaphraseProcessor(Processor):
    """Quora: pair -> is it a paraphrase; binary cross-entropy on one logit."""

    def __init__(self, *args, form: str = "cross", **kw):
        super().__init__(*args, **kw)
        self.form = form

    def collator(self):
        return PairCollator(self.tokenizer, self.form, self.max_length)

    def loss(self, model, batch):
        return F.binary_cross_entropy_with_logits(model.paraphrase_logits(batch), batch["labels"].float())

    def outputs_to_predictions(self, model, batch):
        return (model.paraphrase_logits(batch) > 0).long().tolist()


class SimilarityProcessor(Processor):
    """STS: pair -> similarity 0–5; trained on the 0–1 scale (label / 5)."""

    def __init__(self, *args, form: str = "siamese", loss_kind: str = "mse", **kw):
        super().__init__(*args, **kw)
        self.form, self.loss_kind = form, loss_kind

    def collator(self):
        return PairCollator(self.tokenizer, self.form, self.max_length)

    def loss(self, model, batch):
        return similarity_loss(model.similarity_scores(batch).float(), batch["labels"].float() / 5.0, self.loss_kind)

    def outputs_to_predictions(self, model, batch):
        return (5.0 * model.similarity_scores(batch).float()).clamp(0.0, 5.0).tolist()


PROCESSORS = {"sst": SentimentProcessor, "cfimdb": SentimentProcessor, "para": ParaphraseProcessor,
              "sts": SimilarityProcessor}
