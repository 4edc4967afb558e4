"""MNRL (in-batch negatives on Quora's duplicate pairs, tasks/techniques/mnrl.py): the loss against its formula,
the shared-question mask, and the processor that adds it to the paraphrase loss."""
import math

import pytest
import torch
import torch.nn.functional as F

from _tiny_multitask import tiny_multitask as _model
from tasks.domain.data import PairExample
from tasks.domain.losses import mnrl_loss
from tasks.domain.processors import ParaphraseProcessor
from tasks.techniques import REGISTRY
from tasks.techniques.mnrl import MNRLConfig, MNRLProcessor, shared_question_mask


def _mnrl_by_hand(a, b, scale, exclude=None):
    """ℓ_i = −log exp(S_ii) / Σ_j exp(S_ij), S = scale · cos, written with loops."""
    n, losses = len(a), []
    for i in range(n):
        s = [scale * float(F.cosine_similarity(a[i], b[j], dim=0)) for j in range(n)]
        keep = [j for j in range(n) if exclude is None or not exclude[i][j]]
        losses.append(-(s[i] - math.log(sum(math.exp(s[j]) for j in keep))))
    return sum(losses) / n


def test_mnrl_on_a_hand_computed_example():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # cos: b1 is 1/√2 from both a; b2 is a2
    # rows: log(1 + e^(−1/√2)) and log(1 + e^(1/√2 − 1)); columns: log 2 and log(1 + e^(−1))
    assert float(mnrl_loss(a, b, scale=1.0)) == pytest.approx(0.47910964518344756, abs=1e-6)
    assert float(mnrl_loss(a, b, scale=1.0, symmetric=True)) == pytest.approx(0.49115703961126583, abs=1e-6)


@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_mnrl_matches_its_formula(scale):
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    assert float(mnrl_loss(a, b, scale)) == pytest.approx(_mnrl_by_hand(a, b, scale), rel=1e-5)
    both = (_mnrl_by_hand(a, b, scale) + _mnrl_by_hand(b, a, scale)) / 2  # columns: each b against every a
    assert float(mnrl_loss(a, b, scale, symmetric=True)) == pytest.approx(both, rel=1e-5)


def test_mnrl_leaves_out_the_excluded_entries_and_never_the_diagonal():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    exclude = torch.zeros(4, 4, dtype=torch.bool)
    exclude[0, 2] = exclude[2, 0] = True
    assert float(mnrl_loss(a, b, 20.0, exclude=exclude)) == pytest.approx(
        _mnrl_by_hand(a, b, 20.0, exclude.tolist()), rel=1e-5)
    with pytest.raises(ValueError, match="diagonal"):
        mnrl_loss(a, b, exclude=torch.eye(4, dtype=torch.bool))


def test_pairs_that_share_a_question_are_not_each_others_negatives():
    a = ["How do I cook?", "What is a dog", "how do i COOK", "Why?"]
    b = ["How can I cook", "What's a dog?", "Cooking: how?", "why is it"]
    mask = shared_question_mask(a, b)  # pairs 0 and 2 share "how do i cook"
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, 2] = expected[2, 0] = True
    assert torch.equal(mask, expected)


PAIRS = [("how do i cook", "how can i cook", 1), ("what is a dog", "what is the dog", 1), ("why", "why not", 0),
         ("the good movie", "a great film", 1), ("how do i cook", "cook how", 1), ("a cat runs", "the mat", 0)]


def test_mnrl_adds_weight_times_the_in_batch_loss_over_the_duplicates(tiny_checkpoint):
    model = _model(tiny_checkpoint, ("para",), dropout=0.0)
    train = [PairExample(f"q{i}", a, b, y) for i, (a, b, y) in enumerate(PAIRS)]
    base = ParaphraseProcessor("para", model.tokenizer, train=train, batch_size=8, form="cross")
    base.loss_weight = 2.0
    mnrl = MNRLProcessor(base, weight=0.7, scale=20.0, symmetric=True)
    assert mnrl.loss_weight == 2.0 and mnrl.num_batches() == 1
    batch = next(mnrl.batches(0))
    dup = [i for i, y in zip(batch["ids"], batch["labels"].tolist()) if y == 1]
    assert len(dup) == 4 and batch["mnrl_input_ids_1"].size(0) == 4
    pos = {i: k for k, i in enumerate(dup)}
    expected_mask = torch.zeros(4, 4, dtype=torch.bool)  # q0 and q4 share "how do i cook"
    expected_mask[pos["q0"], pos["q4"]] = expected_mask[pos["q4"], pos["q0"]] = True
    assert torch.equal(batch["mnrl_exclude"], expected_mask)
    by_id = {e.id: e for e in train}
    a = model.encode([by_id[i].sentence1 for i in dup], convert_to_tensor=True)  # eval mode, no dropout: the same vectors
    b = model.encode([by_id[i].sentence2 for i in dup], convert_to_tensor=True)
    expected = base.loss(model, batch) + 0.7 * mnrl_loss(a, b, 20.0, True, expected_mask)
    assert float(mnrl.loss(model, batch).detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_mnrl_is_off_by_default_and_skips_batches_without_two_duplicates(tiny_checkpoint):
    model = _model(tiny_checkpoint, ("para",))
    train = [PairExample("q0", "how do i cook", "how can i cook", 1), PairExample("q1", "why", "why not", 0)]
    base = ParaphraseProcessor("para", model.tokenizer, train=train, batch_size=8, form="cross")
    technique = REGISTRY["mnrl"]
    procs = {"para": base}
    assert technique.wrap_processors(MNRLConfig(), model, procs) is procs  # --para_mnrl_weight 0: untouched
    wrapped = technique.wrap_processors(MNRLConfig(para_mnrl_weight=1.0), model, procs)["para"]
    batch = next(wrapped.batches(0))
    assert not any(k.startswith("mnrl_") for k in batch)
    assert torch.equal(wrapped.loss(model, batch), base.loss(model, batch))
    with pytest.raises(ValueError, match="para"):
        technique.wrap_processors(MNRLConfig(para_mnrl_weight=1.0), model, {"sst": base})
