"""The supervised contrastive phase (López-Ávila & Suárez-Paniagua 2024, §3.2), with their imbalance correction.

Before fine-tuning, pull sentences of the same class together and push other classes apart, so that the
classifier later starts from clustered sentence vectors. Siamese pairs (u, v), each sentence encoded alone:

    cosine_mse (the paper's form, SBERT's CosineSimilarityLoss):  (label − cos(u, v))²,  label = same class
    supcon (Khosla et al. 2020): both sides of every pair of the batch, 2B labelled vectors, temperature τ

Imbalance correction (§3.2.1): class k of size n_k is resized to round(r_k · n_k) examples with
    f(x) = log(max_k / x) · max_ratio / log(max_k),    r_k = max(min_ratio, f(n_k))          (eq. 4, 5)
(max_k the largest class's size): small classes grow up to max_ratio (f(1) = max_ratio), large ones by
min_ratio. The paper prints eq. 5a with min(); it calls min_ratio a lower bound, and min() would give the
largest class (f = 0) no examples at all, so we read it as max(). The added copies are varied by deleting
some of their stop words, so that a small class is not just the same few sentences repeated. Pairs are then
formed as in the paper: the balanced set and a shuffled copy zipped together, without repeated pairs.
"""
from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from typing import Dict, Hashable, Iterator, List, Sequence, Tuple

import torch

from ..losses import cosine_mse_loss, supcon_loss

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


# ---- pure functions ---------------------------------------------------------------------------------------

def class_ratio(size: int, largest: int, min_ratio: float = 1.5, max_ratio: float = 4.0) -> float:
    """The paper's resize ratio of a class of `size` examples when the largest class has `largest` (eq. 4, 5a)."""
    if not 1 <= size <= largest:
        raise ValueError(f"class size must be in [1, largest={largest}], got {size}")
    if not 0 < min_ratio <= max_ratio:
        raise ValueError(f"need 0 < min_ratio <= max_ratio, got {min_ratio}, {max_ratio}")
    f = max_ratio if largest == 1 else math.log(largest / size) * max_ratio / math.log(largest)  # f(1) = max_ratio
    return max(min_ratio, f)


def balanced_sizes(counts: Dict[Hashable, int], min_ratio: float = 1.5, max_ratio: float = 4.0) -> Dict[Hashable, int]:
    """New size of each class, round(r_k · n_k) (eq. 5b)."""
    largest = max(counts.values())
    return {k: round(class_ratio(n, largest, min_ratio, max_ratio) * n) for k, n in counts.items()}


def delete_stopwords(sentence: str, p: float, rng: random.Random, min_words: int = MIN_WORDS_FOR_NOISE) -> str:
    """Delete each stop word with probability p, in sentences of at least `min_words` words; one word always stays."""
    words = sentence.split()
    if len(words) < min_words:
        return sentence
    kept = [w for w in words if w.lower() not in STOP_WORDS or rng.random() >= p]
    return " ".join(kept or words[:1])


def oversample(examples: Sequence[Tuple[str, Hashable]], rng: random.Random, min_ratio: float = 1.5,
               max_ratio: float = 4.0, stopword_p: float = 0.5) -> List[Tuple[str, Hashable]]:
    """The balanced set: every example once, plus copies up to each class's new size, cycling through the
    class in a shuffled order, each copy varied by stop-word deletion."""
    by_class: Dict[Hashable, List[str]] = defaultdict(list)
    for sentence, label in examples:
        by_class[label].append(sentence)
    sizes = balanced_sizes({k: len(v) for k, v in by_class.items()}, min_ratio, max_ratio)
    out = list(examples)
    for label, sentences in by_class.items():
        order = sentences[:]
        rng.shuffle(order)
        out += [(delete_stopwords(order[i % len(order)], stopword_p, rng), label)
                for i in range(sizes[label] - len(sentences))]
    return out


def make_pairs(n: int, rng: random.Random) -> List[Tuple[int, int]]:
    """Pairs of indices from two shuffles of range(n) zipped together, without self-pairs or repeated
    pairs ((i, j) and (j, i) count as one)."""
    a, b = list(range(n)), list(range(n))
    rng.shuffle(a)
    rng.shuffle(b)
    seen, pairs = set(), []
    for i, j in zip(a, b):
        key = (min(i, j), max(i, j))
        if i != j and key not in seen:
            seen.add(key)
            pairs.append((i, j))
    return pairs


# ---- the processor ----------------------------------------------------------------------------------------

class ContrastiveProcessor:
    """Labelled sentences as Siamese pair batches for the shared Trainer (`num_batches`, `batches`, `loss`).

    The model is anything with `embed(input_ids, attention_mask, token_type_ids) -> (B, C)`, e.g. a
    MultitaskBert without heads around the encoder that fine-tuning will use next.
    """

    def __init__(self, examples: Sequence[Tuple[str, Hashable]], tokenizer, loss_kind: str = "cosine_mse",
                 temperature: float = 0.1, imbalance_correction: bool = True, min_ratio: float = 1.5,
                 max_ratio: float = 4.0, stopword_p: float = 0.5, batch_size: int = 32, max_length: int = 128,
                 seed: int = 0, dev_examples: Sequence[Tuple[str, Hashable]] = ()):
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
        counts = Counter(label for _, label in self.examples)
        self.epoch_size = sum(balanced_sizes(counts, min_ratio, max_ratio).values()) if imbalance_correction else len(self.examples)

    def __len__(self) -> int:
        return self.epoch_size  # examples per epoch, after oversampling

    def num_batches(self) -> int:
        return -(-self.epoch_size // self.batch_size)  # at most: repeated pairs are dropped

    def collate(self, pairs: List[Tuple[Tuple[str, Hashable], Tuple[str, Hashable]]]) -> dict:
        batch = {}
        for side in (0, 1):
            enc = self.tokenizer([p[side][0] for p in pairs], max_length=self.max_length)
            batch.update({f"{k}_{side + 1}": v for k, v in enc.items()})
            batch[f"labels_{side + 1}"] = torch.tensor([self.class_ids.get(p[side][1], -1) for p in pairs])
        batch["same"] = (batch["labels_1"] == batch["labels_2"]).float()
        return batch

    def _batches(self, items: List[Tuple[str, Hashable]], rng: random.Random) -> Iterator[dict]:
        pairs = [(items[i], items[j]) for i, j in make_pairs(len(items), rng)]
        for start in range(0, len(pairs), self.batch_size):
            yield self.collate(pairs[start:start + self.batch_size])

    def batches(self, epoch: int) -> Iterator[dict]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        items = (oversample(self.examples, rng, self.min_ratio, self.max_ratio, self.stopword_p)
                 if self.imbalance_correction else self.examples)
        return self._batches(items, rng)

    def dev_batches(self) -> Iterator[dict]:
        """Pairs of the dev examples (no oversampling), the same every epoch."""
        return self._batches(self.dev_examples, random.Random(self.seed))

    def loss(self, model, batch) -> torch.Tensor:
        u = model.embed(batch["input_ids_1"], batch["attention_mask_1"], batch.get("token_type_ids_1"))  # (B, C)
        v = model.embed(batch["input_ids_2"], batch["attention_mask_2"], batch.get("token_type_ids_2"))
        if self.loss_kind == "cosine_mse":
            return cosine_mse_loss(u.float(), v.float(), batch["same"])
        return supcon_loss(torch.cat([u, v]).float(), torch.cat([batch["labels_1"], batch["labels_2"]]), self.temperature)
