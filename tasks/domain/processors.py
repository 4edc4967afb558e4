"""One small processor per dataset, all sharing one batching, prediction and scoring path.

A processor owns a task's examples and says three things the shared training loop (`tasks.engine.trainer`) needs:
how to batch its data, its loss on a batch, and how to turn model outputs into predictions. The loop
itself knows nothing about sentiment or paraphrases.
"""
from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..engine.devices import to_device
from .data import LengthBucketSampler, PairCollator, SentenceCollator, example_lengths, get_task, subsample
from .losses import similarity_loss
from .metrics import accuracy, pearson_r, write_predictions

log = logging.getLogger(__name__)


def _text_length(example) -> int:
    return sum(len(getattr(example, field, "")) for field in ("sentence", "sentence1", "sentence2"))


def read_splits(name: str, train=None, dev=None, test=None, max_examples: Optional[int] = None) -> Dict[str, list]:
    """A task's examples per split from the given files (paths; None skips a split). `max_examples` keeps a fixed
    random N of train and dev; the test split is read whole, since its predictions must cover every id. A train or
    dev file with no usable rows is a ValueError naming the file (a test file's, a warning)."""
    task = get_task(name)
    splits = {}
    for split, path in (("train", train), ("dev", dev), ("test", test)):
        examples = [] if path is None else task.loader(Path(path))
        if path is not None and not examples:
            problem = f"{path}: no usable rows (a header and no rows, or every row skipped as malformed)"
            if split == "test":
                log.warning(f"{problem}: no {name} test predictions will be written")
            else:
                raise ValueError(f"{problem}: nothing to {'train' if split == 'train' else 'evaluate'} {name} on")
        splits[split] = examples if split == "test" else subsample(examples, max_examples)
        if path is not None and not splits[split] and split != "test":
            raise ValueError(f"--max_examples {max_examples} leaves no {split} rows of {path}")
    return splits


class Processor:
    """Base: `batches` for training, `predict` and `score` for evaluation, `loss` per subclass."""

    loss_weight = 1.0  # the trainer scales this task's loss by it (multitask: --{task}_loss_weight)
    output_kind = "categorical"  # what its outputs are, for R-Drop's consistency term (losses.rdrop_consistency)

    def __init__(self, name: str, tokenizer, train: Sequence = (), dev: Sequence = (), test: Sequence = (),
                 batch_size: int = 32, max_length: int = 128, seed: int = 0, eval_batch_size: int = 128):
        self.name, self.task = name, get_task(name)
        self.tokenizer, self.max_length = tokenizer, max_length
        self.splits = {"train": list(train), "dev": list(dev), "test": list(test)}
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self._lengths: Optional[List[int]] = None

    @classmethod
    def from_files(cls, name: str, tokenizer, train=None, dev=None, test=None, max_examples: Optional[int] = None, **kw):
        """The processor of the given files (read_splits: None skips a split; a train or dev file with no usable
        rows stops here, naming the file, rather than deep inside the first batch)."""
        return cls(name, tokenizer, **read_splits(name, train, dev, test, max_examples), **kw)

    # ---- batching -------------------------------------------------------------------------------------------
    def collator(self):
        raise NotImplementedError

    def train_collator(self, epoch: int):
        """The collator of training batches (pair processors may vary the examples per epoch)."""
        return self.collator()

    def num_batches(self) -> int:
        return -(-len(self.splits["train"]) // self.batch_size)

    def train_batch_indices(self, epoch: int) -> Iterable[List[int]]:
        """The training examples' indices, batch by batch: length-bucketed to cut padding, shuffled by (seed, epoch)."""
        if self._lengths is None:
            self._lengths = example_lengths(self.splits["train"], self.tokenizer, self.max_length)
        sampler = LengthBucketSampler(self._lengths, self.batch_size, shuffle=True, seed=self.seed)
        sampler.set_epoch(epoch)
        return sampler

    def batches(self, epoch: int) -> Iterator[dict]:
        """One pass over the training data, collated batch by batch."""
        return iter(DataLoader(self.splits["train"], batch_sampler=self.train_batch_indices(epoch),
                               collate_fn=self.train_collator(epoch)))

    def train_outputs(self, model, batch) -> torch.Tensor:
        """The head's raw outputs on a training batch (logits, or scores for regression)."""
        raise NotImplementedError

    def loss_from_outputs(self, outputs: torch.Tensor, batch) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, model, batch) -> torch.Tensor:
        """The task loss; split in two so that R-Drop can compare two passes' outputs (techniques/rdrop.py)."""
        return self.loss_from_outputs(self.train_outputs(model, batch), batch)

    # ---- evaluation -----------------------------------------------------------------------------------------
    def outputs_to_predictions(self, model, batch) -> list:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, model, split: str = "dev", device="cpu", progress: Optional[Callable] = None) -> List:
        """Predictions for every example of a split, in file order (batches sorted by length for speed);
        `progress(n)` is called after each batch of n examples (a progress bar's update)."""
        return self._in_file_order(model, split, device, self.predict_examples, progress)

    @torch.no_grad()
    def probabilities(self, model, split: str = "dev", device="cpu") -> torch.Tensor:
        """What an ensemble averages, per example in file order: the class probabilities (N, K), the
        paraphrase probability (N,), or the 0–5 similarity (N,); `from_probabilities` turns them into predictions."""
        return torch.stack(self._in_file_order(model, split, device, self.probability_examples))

    def _in_file_order(self, model, split: str, device, per_batch, progress=None) -> List:
        examples = self.splits[split]
        order = sorted(range(len(examples)), key=lambda i: _text_length(examples[i]))
        preds = [None] * len(examples)
        was_training = model.training
        model.eval()
        for start in range(0, len(order), self.eval_batch_size):
            idx = order[start:start + self.eval_batch_size]
            for i, p in zip(idx, per_batch(model, [examples[i] for i in idx], device)):
                preds[i] = p
            if progress is not None:
                progress(len(idx))
        model.train(was_training)
        return preds

    def probability_examples(self, model, examples: Sequence, device) -> torch.Tensor:
        raise NotImplementedError

    def from_probabilities(self, probs: torch.Tensor) -> list:
        raise NotImplementedError

    def predict_examples(self, model, examples: Sequence, device) -> list:
        """Predictions for one evaluation batch of examples."""
        return self.outputs_to_predictions(model, to_device(self.collator()(examples), device))

    def score(self, preds: Sequence, split: str = "dev") -> float:
        gold = [e.label for e in self.splits[split]]
        return pearson_r(preds, gold) if self.task.metric == "pearson" else accuracy(preds, gold)

    def write(self, path, preds: Sequence, split: str) -> None:
        write_predictions(path, self.name, [e.id for e in self.splits[split]], preds)


class SentimentProcessor(Processor):
    """SST-5 / CFIMDB: one sentence -> class; cross-entropy."""

    def collator(self):
        return SentenceCollator(self.tokenizer, self.max_length)

    def train_outputs(self, model, batch):
        return model.sentiment_logits(batch)

    def loss_from_outputs(self, outputs, batch):
        return F.cross_entropy(outputs, batch["labels"])

    def outputs_to_predictions(self, model, batch):
        return model.sentiment_logits(batch).argmax(-1).tolist()

    def probability_examples(self, model, examples, device):
        return F.softmax(model.sentiment_logits(to_device(self.collator()(examples), device)).float(), dim=-1)

    def from_probabilities(self, probs):
        return probs.argmax(-1).tolist()


def swapped(example):
    """The same pair in the other order: (a, b) -> (b, a)."""
    return dataclasses.replace(example, sentence1=example.sentence2, sentence2=example.sentence1)


class SwapCollator:
    """Training collate_fn that puts each pair in a random order, fixed by (seed, epoch)."""

    def __init__(self, collate, seed: int, epoch: int):
        self.collate, self.rng = collate, random.Random(seed * 1_000_003 + epoch + 7)

    def __call__(self, examples):
        return self.collate([swapped(e) if self.rng.random() < 0.5 else e for e in examples])


class PairProcessor(Processor):
    """A sentence-pair task. Paraphrase and similarity are symmetric relations, but a cross-encoder's input
    `[CLS] a [SEP] b [SEP]` (and Siamese [u; v; |u−v|; u∗v]) is not: with `symmetric=True` training sees
    each pair in a random order every epoch, and a prediction averages the model's output over both orders.
    """

    def __init__(self, *args, form: str = "cross", symmetric: bool = False, **kw):
        super().__init__(*args, **kw)
        self.form, self.symmetric = form, symmetric

    def collator(self):  # cross+siamese takes the sentences apart; the model joins them for its cross-encoder
        return PairCollator(self.tokenizer, "cross" if self.form == "cross" else "siamese", self.max_length)

    def train_collator(self, epoch: int):
        return SwapCollator(self.collator(), self.seed, epoch) if self.symmetric else self.collator()

    def raw_outputs(self, model, batch) -> torch.Tensor:
        """(B,) float scores that predictions are made from."""
        raise NotImplementedError

    def to_predictions(self, raw: torch.Tensor) -> list:
        raise NotImplementedError

    def outputs_to_predictions(self, model, batch):
        return self.to_predictions(self.raw_outputs(model, batch).float())

    def raw_examples(self, model, examples, device) -> torch.Tensor:
        """(B,) raw outputs of one evaluation batch; with `symmetric`, the mean over both orders."""
        collate = self.collator()
        if not self.symmetric:
            return self.raw_outputs(model, to_device(collate(examples), device)).float()
        both = [self.raw_outputs(model, to_device(collate(exs), device)).float()
                for exs in (examples, [swapped(e) for e in examples])]
        return (both[0] + both[1]) / 2

    def predict_examples(self, model, examples, device):
        return self.to_predictions(self.raw_examples(model, examples, device))


class ParaphraseProcessor(PairProcessor):
    """Quora: pair -> is it a paraphrase; binary cross-entropy on one logit (the mean over heads, if several)."""

    output_kind = "bernoulli"

    def train_outputs(self, model, batch):
        return model.paraphrase_head_logits(batch)  # (B, K)

    def loss_from_outputs(self, logits, batch):
        return F.binary_cross_entropy_with_logits(logits, batch["labels"].float()[:, None].expand_as(logits))

    def raw_outputs(self, model, batch):
        return model.paraphrase_logits(batch)

    def to_predictions(self, raw):
        return (raw > 0).long().tolist()

    def probability_examples(self, model, examples, device):
        return torch.sigmoid(self.raw_examples(model, examples, device))

    def from_probabilities(self, probs):
        return (probs > 0.5).long().tolist()


class SimilarityProcessor(PairProcessor):
    """STS: pair -> similarity 0–5; trained on the 0–1 scale (label / 5)."""

    def __init__(self, *args, form: str = "siamese", loss_kind: str = "mse", **kw):
        super().__init__(*args, form=form, **kw)
        self.loss_kind = loss_kind

    output_kind = "regression"

    def train_outputs(self, model, batch):
        return model.similarity_scores(batch).float()

    def loss_from_outputs(self, scores, batch):
        return similarity_loss(scores, batch["labels"].float() / 5.0, self.loss_kind)

    def raw_outputs(self, model, batch):
        return model.similarity_scores(batch)

    def to_predictions(self, raw):
        return (5.0 * raw).clamp(0.0, 5.0).tolist()

    def probability_examples(self, model, examples, device):  # the 0–5 similarity: what an ensemble averages
        return (5.0 * self.raw_examples(model, examples, device)).clamp(0.0, 5.0)

    def from_probabilities(self, probs):
        return probs.tolist()


PROCESSORS = {"sst": SentimentProcessor, "cfimdb": SentimentProcessor, "para": ParaphraseProcessor,
              "sts": SimilarityProcessor}
