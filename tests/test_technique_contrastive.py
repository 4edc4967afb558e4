"""The contrastive phase as the paper's code runs it: the log-ratio threshold rule and the pair counts against
hand-computed values, the resized set, pair balancing, the processor's batches and losses, and the third
phase's frozen encoder and head."""
import random
from collections import Counter

import pytest
import torch
import torch.nn as nn

from minibert import BertModel, Tokenizer
from tasks.techniques.contrastive import (STOP_WORDS, ContrastiveProcessor, balanced_pair_counts, balanced_sizes,
                                          class_multiplier, delete_stopwords, freeze_encoder, log_ratio, make_pairs,
                                          oversample, pair_multiplier)
from tasks.domain.model import MultitaskBert, reference_head


# f(x) = ln(max/x) · max_ratio / ln(max); the class is repeated round(f) times if f ≥ min_ratio, else kept once.
# Worked by hand with max = 1000, ratios 1.5 and 4:
@pytest.mark.parametrize("size, f, times", [
    (1, 4.0, 4),              # f(1) = max_ratio
    (10, 8 / 3, 3),           # ln(100)/ln(1000) = 2/3  -> 4 · 2/3 = 2.67, rounded to 3
    (32, 1.993133, 2),        # ln(31.25) = 3.442019, ln(1000) = 6.907755 -> 4 · 0.498283
    (100, 4 / 3, 1),          # 1.33 < 1.5: below the threshold, the class keeps its size
    (1000, 0.0, 1),           # the largest class is never resized
])
def test_threshold_rule_by_hand(size, f, times):
    assert log_ratio(size, 1000) == pytest.approx(f, rel=1e-6)
    assert class_multiplier(size, 1000) == times


def test_bad_sizes_and_ratios_are_errors():
    assert class_multiplier(1, 1) == 1 and log_ratio(1, 1) == 0.0  # one class of one example: nothing to do
    with pytest.raises(ValueError):
        log_ratio(0, 10)
    with pytest.raises(ValueError):
        class_multiplier(5, 10, min_ratio=3.0, max_ratio=2.0)


def test_balanced_sizes_by_hand():
    assert balanced_sizes({"a": 1000, "b": 10, "c": 1}) == {"a": 1000, "b": 30, "c": 4}
    assert balanced_sizes({"pos": 40, "neg": 4}) == {"pos": 40, "neg": 8}  # f(4) = 4 ln 10 / ln 40 = 2.497 -> 2
    # SST-5's training classes are within 2.2× of the largest: f(1092) = 4 ln(2322/1092) / ln 2322 = 0.389, so
    # the reference resizes nothing (the old max(min_ratio, f) grew every class by 1.5)
    sst = {0: 1092, 1: 2218, 2: 1624, 3: 2322, 4: 1288}
    assert log_ratio(1092, 2322) == pytest.approx(0.389368, rel=1e-5)
    assert balanced_sizes(sst) == sst


def test_stopword_deletion_removes_only_stop_words():
    rng = random.Random(0)
    s = "the film is a joy and it was the best of the year"
    assert delete_stopwords(s, 1.0, rng).split() == [w for w in s.split() if w not in STOP_WORDS]
    assert delete_stopwords(s, 0.0, rng) == s
    assert delete_stopwords("the cat is", 1.0, rng) == "the cat is"  # too short to be noised
    assert delete_stopwords("it is the a of", 1.0, rng) == "it"  # one word always stays


def test_resizing_repeats_the_small_class_exactly_or_varied():
    examples = [(f"the movie number {i} is good", "pos") for i in range(40)] + \
               [(f"it was a bad film {i} for me", "neg") for i in range(4)]
    exact = oversample(examples, random.Random(0))
    assert exact[:len(examples)] == examples and Counter(exact) == Counter(examples + examples[40:])  # neg × 2
    varied = oversample(examples, random.Random(0), stopword_p=1.0)
    assert Counter(label for _, label in varied) == {"pos": 40, "neg": 8}
    assert [s for s, _ in varied[44:]] == [" ".join(w for w in s.split() if w not in STOP_WORDS) for s, _ in examples[40:]]


@pytest.mark.parametrize("classes, augmentation, expected", [
    (2, 12, 12), (3, 12, 12), (4, 12, 24), (5, 12, 24), (8, 1, 3), (99, 2, 12), (100, 12, 12)])
def test_pair_multiplier_is_augmentation_times_floor_log2_classes(classes, augmentation, expected):
    assert pair_multiplier(classes, augmentation) == expected


@pytest.mark.parametrize("same, different, ratio, expected", [
    (22, 78, 1.0, (22, 22)),   # SST-5-like: ~22% same-class pairs -> the different-class ones cut to 22
    (60, 40, 1.0, (40, 40)),
    (0, 10, 1.0, (0, 0)),
    (22, 78, 1.5, (22, 33)),   # scoring_ratio 1.5: at most int(1.5 · 22) of each
])
def test_balanced_pair_counts_by_hand(same, different, ratio, expected):
    assert balanced_pair_counts(same, different, ratio) == expected


def test_pairs_are_multiplier_times_n_then_balanced():
    labels = [0] * 109 + [1] * 222 + [2] * 162 + [3] * 232 + [4] * 129  # SST-5's proportions, n = 854
    raw = make_pairs(labels, 24, random.Random(1), balance=False)
    assert len(raw) == 24 * 854
    assert Counter(i for i, _ in raw) == Counter(j for _, j in raw) == {i: 24 for i in range(854)}
    same = sum(labels[i] == labels[j] for i, j in raw)
    assert 0.19 < same / len(raw) < 0.24  # Σ p_k² = 0.2165: unbalanced, most pairs are negatives
    pairs = make_pairs(labels, 24, random.Random(1))  # the same shuffles, then the cut
    kept_same = sum(labels[i] == labels[j] for i, j in pairs)
    assert kept_same == same and len(pairs) == 2 * same  # as many positives as negatives
    assert not Counter(pairs) - Counter(raw)  # a subset of the zipped pairs
    assert pairs == make_pairs(labels, 24, random.Random(1)) and pairs != make_pairs(labels, 24, random.Random(2))


EXAMPLES = [("good great movie", 0), ("a good film", 0), ("great good cat", 0), ("awful bad movie", 1),
            ("bad dog runs", 1), ("the awful film", 1), ("how do i cook", 2), ("why do you play", 2)]


@pytest.mark.parametrize("loss_kind", ["cosine_mse", "supcon"])
def test_processor_batches_and_losses(tiny_checkpoint, loss_kind):
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    model = MultitaskBert(BertModel.from_pretrained(tiny_checkpoint), tasks=())
    proc = ContrastiveProcessor(EXAMPLES, tok, loss_kind, batch_size=4, seed=0, dev_examples=EXAMPLES[:4],
                                augmentation=2)
    assert len(proc) == 8 and proc.multiplier == 2  # f(2) = 4 ln 1.5 / ln 3 = 1.48 < 1.5: nothing resized
    batches = list(proc.batches(0))
    assert len(batches) == proc.num_batches() and sum(len(b["same"]) for b in batches) == proc.pairs_per_epoch
    same = torch.cat([b["same"] for b in batches])
    assert same.sum() == (1 - same).sum() > 0  # balanced
    for b in batches:
        assert torch.equal(b["same"], (b["labels_1"] == b["labels_2"]).float())
        assert b["input_ids_1"].shape[0] == b["input_ids_2"].shape[0] == len(b["same"])
    loss = proc.loss(model, batches[0])
    loss.backward()
    assert loss.item() > 0 and model.bert.layers[0].ffn.up.weight.grad.abs().sum() > 0
    assert sum(len(b["same"]) for b in proc.dev_batches()) == 4  # one shuffle a side, unbalanced
    with pytest.raises(ValueError, match="two classes"):
        ContrastiveProcessor(EXAMPLES[:3], tok)


def test_reference_head_is_two_linear_layers_without_an_activation():
    head = reference_head(8, 5)
    assert [type(m) for m in head] == [nn.Dropout, nn.Linear, nn.Dropout, nn.Linear]
    assert head[0].p == head[2].p == 0.3 and head[1].out_features == 100
    head.eval()
    x = torch.randn(3, 8)
    expected = (x @ head[1].weight.T + head[1].bias) @ head[3].weight.T + head[3].bias
    torch.testing.assert_close(head(x), expected)


def test_frozen_encoder_gets_no_gradient_and_no_dropout_while_the_head_trains(tiny_checkpoint):
    encoder = BertModel.from_pretrained(tiny_checkpoint, hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)
    model = MultitaskBert(encoder, tasks=("sst",), dropout=0.0)
    model.heads["sentiment"] = reference_head(encoder.config.hidden_size, 5, dropout=0.0)
    freeze_encoder(model.bert)
    model.train()
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    batch = dict(tok(["good movie", "the awful film"]))
    first = model.sentiment_logits(batch)
    assert torch.equal(first, model.sentiment_logits(batch))  # the encoder ran in eval mode: no dropout
    first.sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.bert.parameters())
    assert all(p.grad is not None for p in model.heads.parameters())
