"""The supervised contrastive phase (López-Ávila & Suárez-Paniagua 2024, §3.2), as their code runs it.

Before fine-tuning, pull sentences of the same class together and push other classes apart, so that the
classifier later starts from clustered sentence vectors. Siamese pairs (u, v), each sentence encoded alone:

    cosine_mse (the paper's form, SBERT's CosineSimilarityLoss):  (label − cos(u, v))²,  label = same class
    supcon (Khosla et al. 2020): both sides of every pair of the batch, 2B labelled vectors, temperature τ

Imbalance correction (§3.2.1, eq. 4–5; reference: src/data_augmentation.py, resize_join_multiplying with
classic=False). With max_k the largest class's size,
    f(x) = log(max_k / x) · max_ratio / log(max_k)
a class of n_k examples is repeated round(f(n_k)) times when f(n_k) ≥ min_ratio, and left as it is
otherwise: min_ratio is a threshold, so only classes much smaller than the largest grow. (SST-5's classes are
all within 2.2× of the largest, f < 0.4: nothing is resized.) The reference's copies are exact; stopword_p > 0
varies them by deleting stop words (the reference's own variation, `expander`, is another rule).

Pairs (reference: src/pretraining_tools.py `combinations`, src/CL.py `trainset_sbert`, `score_balancer`):
the resized set is shuffled m = augmentation · ⌊log₂ K⌋ times on each side (K classes; m = augmentation
from K = 100 on), the two sides zipped into m·n pairs, and the larger of the same-class and different-class
groups is cut at random to the size of the smaller, so the loss sees as many positives as negatives.

The third phase (reference: src/head.py) trains a head on a frozen encoder: `reference_head` and
`freeze_encoder` below.
"""
from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from typing import Dict, Hashable, Iterator, List, Sequence, Tuple

import torch
import torch.nn as nn

from ..domain.losses import cosine_mse_loss, supcon_loss

LOSSES = ("cosine_mse", "supcon")
MIN_WORDS_FOR_NOISE = 5  # "when the text length is long enough": shorter sentences are copied unchanged

# A small English stop-word list (articles, pronouns, auxiliaries, prepositions, conjunctions).
STOP_WORDS = frozenset("""
a an the and or but nor so yet if then than that this these those there here what which who whom whose
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
herself it its itself they them their theirs themselves am is are was were be been being have has had
having do does did doing would should could ought will shall can may might must of at by for with about
against between into through during before after above below to from up down in out on off over under
again further once all any both each few more most other some such only own same too very just also as
until while because 's 're 've 'd 'll
""".split())


# ---- imbalance correction: pure functions -------------------------------------------------------------------

def log_ratio(size: int, largest: int, max_ratio: float = 4.0) -> float:
    """f(size) of eq. 4: max_ratio for a class of one example, 0 for the largest class."""
    if not 1 <= size <= largest:
        raise ValueError(f"class size must be in [1, largest={largest}], got {size}")
    if size == largest:
        return 0.0
    return math.log(largest / size) * max_ratio / math.log(largest)


def class_multiplier(size: int, largest: int, min_ratio: float = 1.5, max_ratio: float = 4.0) -> int:
    """How many times the class is repeated: round(f) when f ≥ min_ratio, else once (eq. 5, the reference)."""
    if not 0 < min_ratio <= max_ratio:
        raise ValueError(f"need 0 < min_ratio <= max_ratio, got {min_ratio}, {max_ratio}")
    f = log_ratio(size, largest, max_ratio)
    return round(f) if f >= min_ratio else 1


def balanced_sizes(counts: Dict[Hashable, int], min_ratio: float = 1.5, max_ratio: float = 4.0) -> Dict[Hashable, int]:
    """New size of each class: n_k · its multiplier."""
    largest = max(counts.values())
    return {k: n * class_multiplier(n, largest, min_ratio, max_ratio) for k, n in counts.items()}


def delete_stopwords(sentence: str, p: float, rng: random.Random, min_words: int = MIN_WORDS_FOR_NOISE) -> str:
    """Delete each stop word with probability p, in sentences of at least `min_words` words; one word always stays."""
    words = sentence.split()
    if len(words) < min_words or p <= 0:
        return sentence
    kept = [w for w in words if w.lower() not in STOP_WORDS or rng.random() >= p]
    return " ".join(kept or words[:1])


def oversample(examples: Sequence[Tuple[str, Hashable]], rng: random.Random, min_ratio: float = 1.5,
               max_ratio: float = 4.0, stopword_p: float = 0.0) -> List[Tuple[str, Hashable]]:
    """The resized set: every example once, then the extra copies of each resized class (exact when
    stopword_p = 0, as in the reference; else each copy varied by stop-word deletion)."""
    by_class: Dict[Hashable, List[str]] = defaultdict(list)
    for sentence, label in examples:
        by_class[label].append(sentence)
    sizes = balanced_sizes({k: len(v) for k, v in by_class.items()}, min_ratio, max_ratio)
    out = list(examples)
    for label, sentences in by_class.items():
        copies = sizes[label] // len(sentences) - 1
        out += [(delete_stopwords(s, stopword_p, rng), label) for _ in range(copies) for s in sentences]
    return out


# ---- pairs: pure functions ----------------------------------------------------------------------------------

def pair_multiplier(num_classes: int, augmentation: int) -> int:
    """Pairs per example before balancing: augmentation · ⌊log₂ K⌋ below 100 classes, augmentation from 100 on."""
    if augmentation < 1 or num_classes < 2:
        raise ValueError(f"need augmentation >= 1 and at least two classes, got {augmentation}, {num_classes}")
    return augmentation * (num_classes.bit_length() - 1) if num_classes < 100 else augmentation


def balanced_pair_counts(same: int, different: int, ratio: float = 1.0) -> Tuple[int, int]:
    """(same-class, different-class) pairs kept: each group cut to int(ratio · the smaller group's size)
    (the reference's score_balancer, with its scoring_ratio = 1 by default)."""
    threshold = int(min(same, different) * ratio)
    return min(same, threshold), min(different, threshold)


def make_pairs(labels: Sequence[Hashable], multiplier: int, rng: random.Random,
               balance: bool = True) -> List[Tuple[int, int]]:
    """Index pairs: `multiplier` shuffles of range(n) zipped with `multiplier` others (multiplier · n pairs,
    self-pairs included as in the reference), then, if `balance`, as many same-class as different-class
    pairs, each group's survivors drawn at random, in a shuffled order."""
    n = len(labels)
    left = [i for _ in range(multiplier) for i in rng.sample(range(n), n)]
    right = [i for _ in range(multiplier) for i in rng.sample(range(n), n)]
    pairs = list(zip(left, right))
    if not balance:
        return pairs
    same = [p for p in pairs if labels[p[0]] == labels[p[1]]]
    different = [p for p in pairs if labels[p[0]] != labels[p[1]]]
    keep_same, keep_different = balanced_pair_counts(len(same), len(different))
    kept = rng.sample(same, keep_same) + rng.sample(different, keep_different)
    rng.shuffle(kept)
    return kept


# ---- the processor ----------------------------------------------------------------------------------------

class ContrastiveProcessor:
    """Labelled sentences as Siamese pair batches for the shared Trainer (`num_batches`, `batches`, `loss`).

    The model is anything with `embed(input_ids, attention_mask, token_type_ids) -> (B, C)`, e.g. a
    MultitaskBert without heads around the encoder that fine-tuning will use next. `len` is the number of
    examples after resizing; an epoch has `num_batches()` batches of pairs (exact for epoch 0; later epochs
    draw other pairs, and their balanced count differs by a few).
    """

    def __init__(self, examples: Sequence[Tuple[str, Hashable]], tokenizer, loss_kind: str = "cosine_mse",
                 temperature: float = 0.1, imbalance_correction: bool = True, min_ratio: float = 1.5,
                 max_ratio: float = 4.0, stopword_p: float = 0.0, batch_size: int = 32, max_length: int = 128,
                 seed: int = 0, dev_examples: Sequence[Tuple[str, Hashable]] = (), augmentation: int = 12,
                 balance_pairs: bool = True):
        if loss_kind not in LOSSES:
            raise ValueError(f"contrastive loss must be one of {LOSSES}, got {loss_kind!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if len({label for _, label in examples}) < 2:
            raise ValueError("the contrastive phase needs labelled examples of at least two classes")
        self.examples, self.dev_examples = list(examples), list(dev_examples)
        self.class_ids = {k: i for i, k in enumerate(sorted({label for _, label in self.examples}, key=str))}
        self.tokenizer, self.loss_kind, self.temperature = tokenizer, loss_kind, temperature
        self.imbalance_correction, self.min_ratio, self.max_ratio = imbalance_correction, min_ratio, max_ratio
        self.stopword_p, self.batch_size, self.max_length, self.seed = stopword_p, batch_size, max_length, seed
        self.multiplier = pair_multiplier(len(self.class_ids), augmentation)
        self.balance_pairs = balance_pairs
        counts = Counter(label for _, label in self.examples)
        self.epoch_size = sum(balanced_sizes(counts, min_ratio, max_ratio).values()) if imbalance_correction else len(self.examples)
        self.pairs_per_epoch = len(self._epoch(0)[1])

    def __len__(self) -> int:
        return self.epoch_size  # examples per epoch, after resizing

    def num_batches(self) -> int:
        return -(-self.pairs_per_epoch // self.batch_size)

    def _epoch(self, epoch: int):
        """The epoch's (resized examples, index pairs), drawn from (seed, epoch) so runs repeat exactly."""
        rng = random.Random(self.seed * 1_000_003 + epoch)
        items = (oversample(self.examples, rng, self.min_ratio, self.max_ratio, self.stopword_p)
                 if self.imbalance_correction else self.examples)
        return items, make_pairs([label for _, label in items], self.multiplier, rng, self.balance_pairs)

    def collate(self, pairs: List[Tuple[Tuple[str, Hashable], Tuple[str, Hashable]]]) -> dict:
        batch = {}
        for side in (0, 1):
            enc = self.tokenizer([p[side][0] for p in pairs], max_length=self.max_length)
            batch.update({f"{k}_{side + 1}": v for k, v in enc.items()})
            batch[f"labels_{side + 1}"] = torch.tensor([self.class_ids.get(p[side][1], -1) for p in pairs])
        batch["same"] = (batch["labels_1"] == batch["labels_2"]).float()
        return batch

    def _batches(self, items: List[Tuple[str, Hashable]], pairs: List[Tuple[int, int]]) -> Iterator[dict]:
        for start in range(0, len(pairs), self.batch_size):
            yield self.collate([(items[i], items[j]) for i, j in pairs[start:start + self.batch_size]])

    def batches(self, epoch: int) -> Iterator[dict]:
        return self._batches(*self._epoch(epoch))

    def dev_batches(self) -> Iterator[dict]:
        """Pairs of the dev examples (one shuffle a side, no resizing, not balanced: the reference's evaluator
        pairs), the same every epoch."""
        labels = [label for _, label in self.dev_examples]
        return self._batches(self.dev_examples, make_pairs(labels, 1, random.Random(self.seed), balance=False))

    def loss(self, model, batch) -> torch.Tensor:
        u = model.embed(batch["input_ids_1"], batch["attention_mask_1"], batch.get("token_type_ids_1"))  # (B, C)
        v = model.embed(batch["input_ids_2"], batch["attention_mask_2"], batch.get("token_type_ids_2"))
        if self.loss_kind == "cosine_mse":
            return cosine_mse_loss(u.float(), v.float(), batch["same"])
        return supcon_loss(torch.cat([u, v]).float(), torch.cat([batch["labels_1"], batch["labels_2"]]), self.temperature)


# ---- the third phase: a head on a frozen encoder (reference: src/head.py, src/multiple_trainings.py) ----------

def freeze_encoder(encoder: nn.Module):
    """No gradient for the encoder, and no dropout in it even while the model around it trains: the
    reference's third phase reads sentence vectors from SentenceTransformer.encode, which runs in eval mode
    under no_grad. Returns the hook's handle (`.remove()` undoes the eval mode, not requires_grad)."""
    encoder.requires_grad_(False)
    return encoder.register_forward_pre_hook(_stay_in_eval)


def _stay_in_eval(module: nn.Module, args) -> None:
    if module.training:
        module.eval()  # dropout off; returns nothing, so the forward's inputs stay as they are
