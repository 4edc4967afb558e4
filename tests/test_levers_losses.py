"""The levers' math as pure functions, each against its formula on tiny tensors: MNRL (in-batch negatives),
R-Drop's symmetric KL / MSE, multi-sample dropout, the STS cosine maps, layer-wise lr scales."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tasks.engine.param_groups import layer_lr_scales
from tasks.losses import mnrl_loss, rdrop_consistency, symmetric_kl
from tasks.model import cosine_to_unit, multi_sample_dropout
from tasks.techniques.mnrl import shared_question_mask
from tasks.techniques.rdrop import rdrop_loss


# ---- MNRL ------------------------------------------------------------------------------------------------------

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


# ---- R-Drop ----------------------------------------------------------------------------------------------------

def _kl(p, q):
    return (p * (p / q).log()).sum(-1)


def test_symmetric_kl_is_half_the_two_kls():
    l1, l2 = torch.randn(6, 5), torch.randn(6, 5)
    p, q = l1.softmax(-1), l2.softmax(-1)
    expected = (0.5 * (_kl(p, q) + _kl(q, p))).mean()
    assert float(symmetric_kl(l1, l2)) == pytest.approx(float(expected), rel=1e-5)
    torch_kl = F.kl_div(l2.log_softmax(-1), p, reduction="batchmean")  # KL(p‖q) as torch computes it
    assert float(_kl(p, q).mean()) == pytest.approx(float(torch_kl), rel=1e-5)
    assert float(symmetric_kl(l1, l1)) == pytest.approx(0.0, abs=1e-7)


def test_rdrop_consistency_per_output_kind():
    z1, z2 = torch.randn(6, 2), torch.randn(6, 2)  # two paraphrase heads' logits
    p, q = torch.sigmoid(z1), torch.sigmoid(z2)
    bern = lambda x, y: x * (x / y).log() + (1 - x) * ((1 - x) / (1 - y)).log()  # noqa: E731
    expected = (0.5 * (bern(p, q) + bern(q, p))).mean()
    assert float(rdrop_consistency(z1, z2, "bernoulli")) == pytest.approx(float(expected), rel=1e-5)
    s1, s2 = torch.rand(6), torch.rand(6)
    assert float(rdrop_consistency(s1, s2, "regression")) == pytest.approx(float(((s1 - s2) ** 2).mean()), rel=1e-6)
    l1, l2 = torch.randn(3, 5), torch.randn(3, 5)
    assert torch.equal(rdrop_consistency(l1, l2, "categorical"), symmetric_kl(l1, l2))
    with pytest.raises(ValueError):
        rdrop_consistency(l1, l2, "ordinal")


def test_rdrop_total_is_the_mean_task_loss_plus_alpha_times_the_consistency():
    assert float(rdrop_loss(torch.tensor(1.0), torch.tensor(3.0), torch.tensor(0.5), 4.0)) == pytest.approx(4.0)


# ---- multi-sample dropout --------------------------------------------------------------------------------------

def test_multi_sample_dropout_is_the_mean_over_k_masks_in_training_and_one_pass_in_eval():
    head, drop, h = nn.Linear(6, 3), nn.Dropout(0.5), torch.randn(4, 6)
    torch.manual_seed(1)
    got = multi_sample_dropout(head, drop, h, samples=3)
    torch.manual_seed(1)
    expected = sum(head(drop(h)) for _ in range(3)) / 3
    assert torch.allclose(got, expected, atol=1e-6)
    torch.manual_seed(1)
    one = multi_sample_dropout(head, drop, h, samples=1)
    torch.manual_seed(1)
    assert torch.equal(one, head(drop(h)))  # K = 1: the plain head, bit for bit
    drop.eval()
    assert torch.equal(multi_sample_dropout(head, drop, h, samples=5), head(h))


# ---- STS cosine maps and layer-wise lr scales --------------------------------------------------------------------

def test_cosine_maps():
    cos = torch.tensor([-1.0, -0.2, 0.0, 0.5, 1.0])
    assert torch.equal(cosine_to_unit(cos, "clamp"), cos)  # the loss sees the cosine; predictions clamp it
    assert torch.allclose(5 * cosine_to_unit(cos, "affine"), torch.tensor([0.0, 2.0, 2.5, 3.75, 5.0]))
    with pytest.raises(ValueError):
        cosine_to_unit(cos, "sigmoid")


def test_layer_lr_scales_follow_the_formula():
    names = ["bert.embeddings.word.weight", "bert.layers.0.attn.query.weight", "bert.layers.1.ffn.up.bias",
             "bert.layers.2.ffn_norm.weight", "bert.pooler.dense.weight"]
    d, L = 0.8, 3
    assert layer_lr_scales(names, d) == pytest.approx({
        names[0]: d ** (L + 1), names[1]: d ** (L - 0), names[2]: d ** (L - 1), names[3]: d ** (L - 2), names[4]: 1.0})
    with pytest.raises(ValueError, match="no encoder layer"):
        layer_lr_scales(["w", "b"], 0.9)
