"""Each piece of BERT's math against a reference: torch's own ops or the formula written directly."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minibert.functional import (additive_attention_mask, attention, dropout, fast_attention, gelu, gelu_tanh,
                                 keep_mask, layer_norm, merge_heads, split_heads)


def test_gelu_is_exact_erf_gelu():
    x = torch.linspace(-8, 8, 2001, dtype=torch.float64)
    assert torch.allclose(gelu(x), F.gelu(x, approximate="none"), atol=1e-12)
    # and hand-computed values: gelu(1) = Φ(1) = 0.841344746..., gelu(-1) = -0.158655254...
    assert gelu(torch.tensor(1.0, dtype=torch.float64)).item() == pytest.approx(0.8413447460685429, abs=1e-12)
    assert gelu(torch.tensor(-1.0, dtype=torch.float64)).item() == pytest.approx(-0.15865525393145707, abs=1e-12)


def test_gelu_tanh_matches_torch_approximation():
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    assert torch.allclose(gelu_tanh(x), F.gelu(x, approximate="tanh"), atol=1e-12)


def test_layer_norm_matches_torch_and_numpy():
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    w, b = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    ours = layer_norm(x, w, b, 1e-12)
    assert torch.allclose(ours, F.layer_norm(x, (16,), w, b, 1e-12), atol=1e-12)
    xn = x.numpy()
    ref = (xn - xn.mean(-1, keepdims=True)) / np.sqrt(xn.var(-1, keepdims=True) + 1e-12) * w.numpy() + b.numpy()
    assert np.allclose(ours.numpy(), ref, atol=1e-12)


def test_additive_mask_values_and_shape():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    add = additive_attention_mask(mask, torch.float32)
    assert add.shape == (2, 1, 1, 3)
    assert add[0, 0, 0].tolist() == [0.0, 0.0, torch.finfo(torch.float32).min]
    assert add[1, 0, 0, 0].item() == 0.0 and add[1, 0, 0, 2].item() == torch.finfo(torch.float32).min
    with pytest.raises(ValueError, match="batch, seq_len"):
        additive_attention_mask(torch.ones(2, 1, 3), torch.float32)


def test_split_merge_heads_round_trip():
    x = torch.randn(2, 5, 12)
    heads = split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    assert torch.equal(heads[:, 1], x[..., 4:8])  # head 1 holds features 4..7
    assert torch.equal(merge_heads(heads), x)


def _direct_attention(q, k, v, keep):
    """softmax(q·k/√d) over kept keys, one query at a time, in float64 loops."""
    B, nh, T, hs = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(nh):
            for i in range(T):
                scores = [(q[b, h, i] @ k[b, h, j]).item() / math.sqrt(hs) if keep[b, j] else -math.inf for j in range(T)]
                weights = torch.softmax(torch.tensor(scores, dtype=torch.float64), dim=0)
                out[b, h, i] = (weights[:, None] * v[b, h]).sum(0)
    return out


def test_attention_against_direct_formula_with_padding():
    q, k, v = (torch.randn(2, 3, 4, 5, dtype=torch.float64) for _ in range(3))
    keep = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    context, probs = attention(q, k, v, additive_attention_mask(keep, torch.float64))
    assert torch.allclose(context, _direct_attention(q, k, v, keep), atol=1e-10)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 3, 4, dtype=torch.float64))
    assert probs[1, :, :, 2:].abs().max().item() == 0.0  # padded keys get no weight


@pytest.mark.parametrize("with_mask", [False, True])
def test_manual_attention_equals_sdpa(with_mask):
    q, k, v = (torch.randn(3, 4, 7, 8) for _ in range(3))
    keep = torch.ones(3, 7, dtype=torch.long)
    keep[1, 5:] = 0
    keep[2, 2:] = 0
    mask = additive_attention_mask(keep, torch.float32) if with_mask else None
    manual, _ = attention(q, k, v, mask)
    assert torch.allclose(manual, fast_attention(q, k, v, mask), atol=1e-6)
    assert torch.allclose(manual, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6)


def test_attention_dropout_only_in_training():
    q, k, v = (torch.randn(1, 2, 6, 4) for _ in range(3))
    a, _ = attention(q, k, v, dropout_p=0.5, training=False)
    b, _ = attention(q, k, v, dropout_p=0.0, training=True)
    assert torch.equal(a, b)
    c, _ = attention(q, k, v, dropout_p=0.5, training=True)
    assert not torch.allclose(a, c)


# ---- dropout ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9, 1 / 3])
def test_keep_mask_keeps_exactly_one_minus_rounded_p_of_every_16_bit_value(monkeypatch, p):
    # feed every 16-bit value once: the threshold must keep exactly 2^16 − round(p·2^16) of them
    every_value = torch.arange(-32768, 32768, dtype=torch.int16).view(torch.int64)
    monkeypatch.setattr(torch, "randint", lambda *a, **k: every_value)
    kept = keep_mask((65536,), p).sum().item()
    assert kept == 65536 - round(p * 65536)
    assert abs(kept / 65536 - (1 - p)) <= 2 ** -17


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_mask_rate_is_right_in_each_of_the_four_lanes_of_a_draw(p):
    torch.manual_seed(0)
    lanes = keep_mask((1_000_000, 4), p).double().mean(0)  # column j = lane j of each 64-bit draw
    sigma = math.sqrt(p * (1 - p) / 1_000_000)
    assert torch.all((lanes - (1 - p)).abs() < 5 * sigma), lanes


def test_dropout_zeroes_and_rescales_like_torch_and_its_gradient_is_the_mask():
    torch.manual_seed(0)
    x = torch.randn(400, 500, dtype=torch.float64, requires_grad=True)
    y = dropout(x, 0.2, training=True)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.8)  # inverted dropout: survivors scaled by 1 / (1 − p)
    assert abs(kept.double().mean().item() - 0.8) < 5 * math.sqrt(0.16 / x.numel())
    y.sum().backward()
    assert torch.equal(x.grad, kept.double() / 0.8)
    # the same distribution of outputs as torch's dropout: the mean and second moment of x = 1 agree
    ones = torch.ones(2_000_000)
    ours, theirs = dropout(ones, 0.3), F.dropout(ones, 0.3, training=True)
    assert abs(ours.mean().item() - theirs.mean().item()) < 0.005
    assert abs(ours.pow(2).mean().item() - theirs.pow(2).mean().item()) < 0.01


def test_dropout_is_the_identity_when_off_and_rejects_bad_p():
    x = torch.randn(3, 4)
    assert dropout(x, 0.5, training=False) is x and dropout(x, 0.0, training=True) is x
    assert torch.equal(dropout(x, 1.0, training=True), torch.zeros_like(x))
    with pytest.raises(ValueError, match="dropout probability"):
        dropout(x, 1.5, training=True)
