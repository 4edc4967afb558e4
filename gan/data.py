"""Semi-supervised data: hide most training labels, mix labelled and unlabelled rows, batch them with a mask.

A training file is split, per class, into a labelled part (`labeled_fraction` of each class) and a pool
whose labels are dropped; `unlabeled_fraction` of the pool joins training as unlabelled rows. Both splits
take prefixes of seeded permutations, so with one seed the 1% labelled set lies inside the 5% one, and so
on: the curves of the study differ by the amount of labels, not by which sentences were drawn.
When labels are scarce GAN-BERT repeats each labelled row (`replication_factor`) so that batches hold some.
"""
from __future__ import annotations

import dataclasses
import math
import random
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from tasks.domain.data import SentenceCollator
from tasks.engine.config import flag
from tasks.domain.processors import SentimentProcessor, read_splits


@dataclasses.dataclass(frozen=True)
class SemiSupervisedConfig:
    """Which training rows keep their labels, and how many of the rest join training unlabelled."""
    labeled_fraction: float = flag(0.1, "share of each class that keeps its labels")
    unlabeled_fraction: float = flag(1.0, "share of the remaining rows that joins training without labels")
    replicate: str = flag("auto", "times each labelled row is repeated; auto: GAN-BERT's max(1, log2(1 / labelled share))")

    def __post_init__(self):
        if self.replicate != "auto" and not (str(self.replicate).isdigit() and int(self.replicate) >= 1):
            raise ValueError(f"--replicate must be 'auto' or an integer >= 1, got {self.replicate!r}")
        if not 0 < self.labeled_fraction <= 1:
            raise ValueError(f"--labeled_fraction must be in (0, 1], got {self.labeled_fraction}")
        if not 0 <= self.unlabeled_fraction <= 1:
            raise ValueError(f"--unlabeled_fraction must be in [0, 1], got {self.unlabeled_fraction}")

IGNORE = -100  # the label of an unlabelled row (F.cross_entropy's ignore_index)


def labeled_split(labels: Sequence[int], fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """Indices (labelled, pool): per class the first round(fraction · n_c), at least one, of a seeded permutation."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"labeled_fraction must be in (0, 1], got {fraction}")
    by_class: Dict[int, List[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        if y is None:
            raise ValueError(f"row {i} has no label: the training file must be labelled")
        by_class[y].append(i)
    labeled, pool = [], []
    for y, idx in sorted(by_class.items()):
        random.Random(seed * 1_000_003 + y).shuffle(idx)  # one permutation per (seed, class), whatever the fraction
        n = max(1, round(fraction * len(idx)))
        labeled += idx[:n]
        pool += idx[n:]
    return sorted(labeled), sorted(pool)


def unlabeled_subset(pool: Sequence[int], fraction: float, seed: int) -> List[int]:
    """The first round(fraction · len(pool)) of a seeded permutation of the pool."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"unlabeled_fraction must be in [0, 1], got {fraction}")
    order = list(pool)
    random.Random(seed * 1_000_003 - 1).shuffle(order)
    return sorted(order[:round(fraction * len(order))])


def replication_factor(num_labeled: int, num_unlabeled: int) -> int:
    """GAN-BERT's rule: repeat each labelled row max(1, ⌊log2 ⌊1 / rate⌋⌋) times, rate = the labelled share."""
    if num_labeled < 1 or num_unlabeled < 0:
        raise ValueError(f"need >= 1 labelled and >= 0 unlabelled rows, got {num_labeled} and {num_unlabeled}")
    rate = num_labeled / (num_labeled + num_unlabeled)
    return max(1, int(math.log2(int(1 / rate))))


class MaskedSentenceCollator(SentenceCollator):
    """SentenceCollator for a mix of labelled and unlabelled rows: `labels` (IGNORE where unknown), `label_mask`."""

    def __call__(self, examples) -> dict:
        batch = super().__call__([dataclasses.replace(e, label=None) for e in examples])  # tokens and ids only
        labels = torch.tensor([IGNORE if e.label is None else e.label for e in examples], dtype=torch.long)  # (B,)
        batch["labels"], batch["label_mask"] = labels, labels != IGNORE
        return batch


class SemiSupervisedProcessor(SentimentProcessor):
    """SST/CFIMDB with most labels hidden: the labelled rows (each `replicate` times) and the unlabelled rows
    in one shuffled training set. `steps` fixes the batches per epoch (the baseline's budget), cycling the data."""

    def __init__(self, name: str, tokenizer, labeled: Sequence, unlabeled: Sequence = (), dev: Sequence = (),
                 test: Sequence = (), replicate: int = 1, steps: Optional[int] = None, **kw):
        if replicate < 1:
            raise ValueError(f"replicate must be >= 1, got {replicate}")
        train = [e for e in labeled for _ in range(replicate)] + [dataclasses.replace(e, label=None) for e in unlabeled]
        super().__init__(name, tokenizer, train=train, dev=dev, test=test, **kw)
        self.steps = steps
        self.stats = {"labeled": len(labeled), "unlabeled": len(unlabeled), "replicate": replicate}

    def collator(self):
        return MaskedSentenceCollator(self.tokenizer, self.max_length)

    def num_batches(self) -> int:
        return self.steps or super().num_batches()


def semi_supervised(task: str, tokenizer, files: Dict[str, str], labeled_fraction: float,
                    unlabeled_fraction: float = 1.0, method: str = "acganbert", replicate: Union[str, int] = "auto",
                    seed: int = 0, max_examples: Optional[int] = None, batch_size: int = 32,
                    max_length: int = 128) -> SemiSupervisedProcessor:
    """The processor of one run. Every method gets the GAN's number of steps per epoch (the same budget);
    "plain" spends them on the labelled rows alone, cycled, as it cannot use unlabelled ones."""
    splits = read_splits(task, *(files.get(s) for s in ("train", "dev", "test")), max_examples=max_examples)
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    lab_idx, pool = labeled_split([e.label for e in train], labeled_fraction, seed)
    unl_idx = unlabeled_subset(pool, unlabeled_fraction, seed)
    labeled, unlabeled = [train[i] for i in lab_idx], [train[i] for i in unl_idx]
    r = replication_factor(len(labeled), len(unlabeled)) if replicate == "auto" else int(replicate)
    steps = math.ceil((r * len(labeled) + len(unlabeled)) / batch_size)
    kw = dict(dev=dev, test=test, batch_size=batch_size, max_length=max_length, seed=seed)
    if method == "plain":
        proc = SemiSupervisedProcessor(task, tokenizer, labeled, steps=steps, **kw)
        proc.stats.update(unlabeled=0, replicate=1)
    else:
        proc = SemiSupervisedProcessor(task, tokenizer, labeled, unlabeled, replicate=r, **kw)
    proc.stats["steps_per_epoch"] = proc.num_batches()
    return proc
