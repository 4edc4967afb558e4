"""The math of BERT as pure functions, each tested against a reference in tests/test_functional.py.

Shapes: B batch, T sequence length, C hidden size, nh heads, hs = C // nh head size.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F


# exercise: gelu — Exact GELU, x·Φ(x) with Φ the standard normal CDF. hint: Φ(x) = (1 + erf(x / √2)) / 2, torch.erf
def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU, x·Φ(x) with the Gaussian CDF written through erf (BERT's "gelu", not the tanh approximation)."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of GELU (HF's "gelu_new" / "gelu_pytorch_tanh")."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


ACTIVATIONS = {"gelu": gelu, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh, "relu": torch.relu, "tanh": torch.tanh}


# exercise: layer_norm — Last dim to mean 0, variance 1, then scale and shift. hint: the biased variance; eps inside the √
def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Normalise the last dimension to zero mean and unit (biased) variance, then scale and shift."""
    mean = x.mean(dim=-1, keepdim=True)
    var = (x - mean).pow(2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


# exercise: attention_mask — The 1/0 mask (B, T) as an additive (B, 1, 1, T) one. hint: 0, or torch.finfo(dtype).min
def additive_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) of 1 = attend / 0 = padding  ->  (B, 1, 1, T) of 0 / a large negative number.

    Added to the attention scores before the softmax, it gives padded keys a weight of (almost exactly)
    zero. We use the dtype's most negative finite value, as HuggingFace does, rather than -inf, so that a
    row whose keys are all padding still has a defined softmax.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (batch, seq_len), got shape {tuple(attention_mask.shape)}")
    mask = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T)
    return (1.0 - mask) * torch.finfo(dtype).min


def keep_mask(shape, p: float, device=None) -> torch.Tensor:
    """A bool mask of `shape`, each entry True with probability 1 − p (p rounded to a multiple of 2⁻¹⁶).

    Why not `torch.empty(shape).bernoulli_(1 - p)`: on the CPU that spends one call of the random generator per
    element, and dropout's masks then take a sixth of a BERT training step. Here each 64-bit draw is cut into
    four 16-bit uniform integers, one per element, and an element is kept when its integer clears a threshold.
    """
    n = math.prod(shape)
    words = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    uniform16 = words.view(torch.int16)[:n].view(shape)  # uniform on [-32768, 32767]
    return uniform16 >= round(p * 65536) - 32768  # P(keep) = 1 − round(p · 2¹⁶) / 2¹⁶


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout: zero each element with probability p and scale the rest by 1 / (1 − p), so the
    expected value is unchanged and evaluation needs no rescaling. The same function as F.dropout; on the CPU its
    mask comes from `keep_mask` (2–3× faster than torch's), elsewhere from torch's fused kernel."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if p == 1.0 or x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    return torch.where(keep_mask(x.shape, p, x.device), x * (1.0 / (1.0 - p)), 0.0)


# exercise: heads — Split C into nh heads of hs = C / nh: (B, T, C) -> (B, nh, T, hs). hint: view, then transpose(1, 2)
def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, nh, T, hs)"""
    B, T, C = x.shape
    return x.view(B, T, num_heads, C // num_heads).transpose(1, 2)


# exercise: heads — Merge the heads back: (B, nh, T, hs) -> (B, T, C). hint: transpose(1, 2), then reshape (not view)
def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, nh, T, hs) -> (B, T, C)"""
    B, nh, T, hs = x.shape
    return x.transpose(1, 2).reshape(B, T, nh * hs)


# exercise: attention — softmax(q kᵀ / √hs + mask) v, and the probabilities. hint: dropout(probs, ...) before @ v
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None,
              dropout_p: float = 0.0, training: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention written out: softmax(q kᵀ / √hs + mask) v.

    q, k, v: (B, nh, T, hs); mask: additive, broadcastable to (B, nh, T, T).
    Returns the context (B, nh, T, hs) and the attention probabilities (B, nh, T, T) (before dropout).
    """
    scores = (q / math.sqrt(q.size(-1))) @ k.transpose(-2, -1)  # (B, nh, T, T); scaling q is T/hs times cheaper
    if mask is not None:
        scores = scores + mask
    probs = torch.softmax(scores, dim=-1)
    context = dropout(probs, dropout_p, training) @ v  # (B, nh, T, hs)
    return context, probs


def fast_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None,
                   dropout_p: float = 0.0, training: bool = False) -> torch.Tensor:
    """The same computation through torch's fused kernel (flash / memory-efficient on CUDA).

    It never forms the (T, T) probabilities in memory, which is why it cannot return them.
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p if training else 0.0)
