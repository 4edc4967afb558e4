"""The contrastive phase: the paper's imbalance formula against hand-computed values, the oversampled copies,
stop-word deletion, pair making, and the processor's batches and losses."""
import random
from collections import Counter

import pytest
import torch

from minibert import BertModel, Tokenizer
from tasks.techniques.contrastive import (STOP_WORDS, ContrastiveProcessor, balanced_sizes, class_ratio, delete_stopwords,
                               make_pairs, oversample)
from tasks.model import MultitaskBert


pytestmark = pytest.mark.usefixtures("one_thread")


# f(x) = ln(max/x) · max_ratio / ln(max), r = max(min_ratio, f), worked by hand with max = 1000, ratios 1.5 and 4:
@pytest.mark.parametrize("size, expected", [
    (1, 4.0),           # f(1) = max_ratio
    (10, 8 / 3),        # ln(100)/ln(1000) = 2/3  -> 4 · 2/3
    (32, 1.993132),     # ln(31.25) = 3.442019, ln(1000) = 6.907755 -> 4 · 0.498283
    (100, 1.5),         # f = 4/3 < 1.5: the lower bound
    (1000, 1.5),        # the largest class: f = 0, raised to the lower bound
])
def test_imbalance_ratio_by_hand(size, expected):
    assert class_ratio(size, 1000) == pytest.approx(expected, rel=1e-6)


def test_ratio_one_where_the_paper_says_and_bad_sizes_are_errors():
    assert class_ratio(1000, 10_000, min_ratio=0.5) == pytest.approx(1.0)  # x = max^((4-1)/4) (eq. 6)
    assert class_ratio(1, 1) == 4.0
    with pytest.raises(ValueError):
        class_ratio(0, 10)
    with pytest.raises(ValueError):
        class_ratio(5, 10, min_ratio=3.0, max_ratio=2.0)


def test_balanced_sizes_by_hand():
    assert balanced_sizes({"a": 1000, "b": 10, "c": 1}) == {"a": 1500, "b": 27, "c": 4}
    # SST-5's training classes are close to balanced: every class grows by the lower bound, 1.5
    sst = {0: 1092, 1: 2218, 2: 1624, 3: 2322, 4: 1288}
    assert balanced_sizes(sst) == {k: round(1.5 * n) for k, n in sst.items()}


def test_stopword_deletion_removes_only_stop_words():
    rng = random.Random(0)
    s = "the film is a joy and it was the best of the year"
    assert delete_stopwords(s, 1.0, rng).split() == [w for w in s.split() if w not in STOP_WORDS]
    assert delete_stopwords(s, 0.0, rng) == s
    assert delete_stopwords("the cat is", 1.0, rng) == "the cat is"  # too short to be noised
    assert delete_stopwords("it is the a of", 1.0, rng) == "it"  # one word always stays


def test_oversampling_reaches_the_new_sizes_with_varied_copies():
    rng = random.Random(0)
    examples = [(f"the movie number {i} is good", "pos") for i in range(40)] + \
               [(f"it was a bad film {i} for me", "neg") for i in range(4)]
    out = oversample(examples, rng, stopword_p=1.0)
    assert Counter(label for _, label in out) == Counter(balanced_sizes({"pos": 40, "neg": 4}))
    assert out[:len(examples)] == examples  # every original once
    originals = {s for s, _ in examples}
    for sentence, _ in out[len(examples):]:
        assert sentence not in originals  # p = 1: every copy lost its stop words
        assert any(sentence.split() == [w for w in o.split() if w not in STOP_WORDS] for o in originals)


def test_pairs_have_no_self_or_repeated_pairs_and_repeat_with_the_seed():
    pairs = make_pairs(50, random.Random(1))
    assert all(i != j for i, j in pairs) and len({frozenset(p) for p in pairs}) == len(pairs) <= 50
    assert pairs == make_pairs(50, random.Random(1)) and pairs != make_pairs(50, random.Random(2))


EXAMPLES = [("good great movie", 0), ("a good film", 0), ("great good cat", 0), ("awful bad movie", 1),
            ("bad dog runs", 1), ("the awful film", 1), ("how do i cook", 2), ("why do you play", 2)]


@pytest.mark.parametrize("loss_kind", ["cosine_mse", "supcon"])
def test_processor_batches_and_losses(tiny_checkpoint, loss_kind):
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    model = MultitaskBert(BertModel.from_pretrained(tiny_checkpoint), tasks=())
    proc = ContrastiveProcessor(EXAMPLES, tok, loss_kind, batch_size=4, seed=0, dev_examples=EXAMPLES[:4])
    assert proc.epoch_size == sum(balanced_sizes({0: 3, 1: 3, 2: 2}).values())
    batches = list(proc.batches(0))
    assert sum(len(b["same"]) for b in batches) <= proc.epoch_size and len(batches) <= proc.num_batches()
    for b in batches:
        assert torch.equal(b["same"], (b["labels_1"] == b["labels_2"]).float())
        assert b["input_ids_1"].shape[0] == b["input_ids_2"].shape[0] == len(b["same"])
    loss = proc.loss(model, batches[0])
    loss.backward()
    assert loss.item() > 0 and model.bert.layers[0].ffn.up.weight.grad.abs().sum() > 0
    assert len(list(proc.dev_batches())) == 1
    with pytest.raises(ValueError, match="two classes"):
        ContrastiveProcessor(EXAMPLES[:3], tok)
