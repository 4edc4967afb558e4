"""The checks of the model's pieces: outputs and gradients against the tensors stored from the reference on the
embedded all-MiniLM-L6-v2 (its embeddings and layer 0, on two padded sentence pairs), the checkpoint table on a
tiny model, and the paraphrase head on fixed sentence vectors. Where a piece calls another exercise's function,
the formula of this module stands in for it.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from .grading import compare, expect, patched
from .stored import load, minilm_config, minilm_part


def split(x, nh):  # (B, T, C) -> (B, nh, T, hs): the heads are consecutive slices of C
    return torch.stack(x.chunk(nh, dim=-1), dim=1)


def merge(x):  # (B, nh, T, hs) -> (B, T, C)
    return torch.cat(x.unbind(1), dim=-1)


def oracle_attention(q, k, v, mask=None, dropout_p=0.0, training=False):
    """softmax(q kᵀ / √hs + mask) v, written as the formula."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    probs = torch.softmax(scores if mask is None else scores + mask, dim=-1)
    return F.dropout(probs, dropout_p, training) @ v, probs


def oracle_fast_attention(q, k, v, mask=None, dropout_p=0.0, training=False):
    return oracle_attention(q, k, v, mask, dropout_p, training)[0]


@lru_cache(maxsize=1)
def _stored():
    s = load()
    mask = torch.where(s["attention_mask"].bool(), 0.0, torch.finfo(torch.float32).min)[:, None, None, :]
    return s, mask  # the stored tensors, and the additive mask (B, 1, 1, T)


def _on_layer0_input(module, s, mask):
    """(x, y, probs): `module` on the stored input of layer 0 with output_attentions, then the stored probe's
    backward, so x.grad is the gradient the reference's was stored for."""
    x = s["embeddings.out"].clone().requires_grad_(True)
    y, probs = module(x, mask, True)
    (y * s["probe"]).sum().backward()
    return x, y, probs


def check_embeddings():
    from minibert.model import Embeddings
    s, _ = _stored()
    config = minilm_config()
    emb = minilm_part("embeddings.", lambda: Embeddings(config))
    ids, types = s["ids"], s["token_type_ids"]
    x = emb(ids, types)
    compare("embeddings output (B, T, C) on MiniLM", x, s["embeddings.out"])
    (x * s["probe"]).sum().backward()
    compare("gradient of the token-type table", emb.token_type.weight.grad, s["embeddings.grad.token_type"])
    compare("gradient of the position table (rows 0..T−1)", emb.position.weight.grad[:ids.size(1)],
            s["embeddings.grad.position"])
    compare("gradient of the word table (the rows of the ids used)", emb.word.weight.grad[ids.unique()],
            s["embeddings.grad.word_rows"])
    with torch.no_grad():
        compare("embeddings output given inputs_embeds = the word vectors", emb(ids, types, emb.word(ids)),
                s["embeddings.out"])
        emb.train()
        zeros = (emb(ids, types) == 0).double().mean().item()
    expect(0.03 < zeros < 0.2, f"in training {zeros:.1%} of the outputs are zero, expected about "
                               f"{config.hidden_dropout_prob:.0%}: dropout comes last, after the LayerNorm")


def check_self_attention():
    import minibert.model as model
    s, mask = _stored()
    attn = minilm_part("layers.0.", lambda: model.Layer(minilm_config())).attn
    with patched(model, split_heads=lambda x, nh: split(x, nh), merge_heads=merge, attention=oracle_attention,
                 fast_attention=oracle_fast_attention):
        x, y, probs = _on_layer0_input(attn, s, mask)
        compare("self-attention output (B, T, C) on MiniLM's layer 0", y, s["self_attention.out"])
        compare("attention probabilities (B, nh, T, T) with output_attentions=True", probs, s["self_attention.probs"])
        compare("gradient w.r.t. the input x", x.grad, s["self_attention.grad_x"])
        with torch.no_grad():
            y, _ = attn(x, mask, False)
        compare("self-attention output with output_attentions=False", y, s["self_attention.out"])


def check_layer():
    import minibert.model as model
    s, mask = _stored()
    layer = minilm_part("layers.0.", lambda: model.Layer(minilm_config()))
    attn = layer.attn

    def oracle_self_attention(x, mask, output_attentions=False):
        nh = attn.num_heads
        q, k, v = (split(lin(x), nh) for lin in (attn.query, attn.key, attn.value))
        context, probs = oracle_attention(q, k, v, mask, attn.dropout_p, attn.training)
        return attn.out(merge(context)), probs

    with patched(attn, forward=oracle_self_attention):
        x, y, probs = _on_layer0_input(layer, s, mask)
        compare("layer output (B, T, C) on MiniLM's layer 0", y, s["layer.out"])
        compare("the attention probabilities the layer returns", probs, s["self_attention.probs"])
        compare("gradient w.r.t. the layer's input x", x.grad, s["layer.grad_x"])


def check_key_table():
    from minibert.checkpoint import hf_to_minibert, minibert_to_hf
    from minibert.config import tiny_config
    from minibert.model import BertModel
    torch.manual_seed(0)
    ours = BertModel(tiny_config()).state_dict()
    hf = minibert_to_hf(ours, prefix="bert.")  # as a BertForPreTraining checkpoint names them
    hf["bert.embeddings.LayerNorm.gamma"] = hf.pop("bert.embeddings.LayerNorm.weight")  # an old TF name
    extra = {"bert.embeddings.position_ids": torch.arange(64), "cls.seq_relationship.weight": torch.zeros(2, 32),
             "classifier.bias": torch.zeros(2), "encoder.adapter.weight": torch.zeros(3)}
    renamed, unexpected = hf_to_minibert({**hf, **extra})
    missing = sorted(set(ours) - set(renamed))
    expect(not missing, f"these of our keys are missing from the result: {', '.join(missing[:5])}")
    surplus = sorted(set(renamed) - set(ours))
    expect(not surplus, f"the result has keys the model does not have: {', '.join(surplus[:5])}")
    for key, tensor in ours.items():
        expect(torch.equal(renamed[key], tensor), f"{key} holds another tensor than HF's {key} maps from")
    expect(list(unexpected) == ["encoder.adapter.weight"],
           f"unexpected keys {list(unexpected)}, expected ['encoder.adapter.weight'] (position_ids and known heads "
           "are ignored, gamma is weight)")


def check_paraphrase_head():
    from minibert.config import tiny_config
    from minibert.model import BertModel
    from tasks.domain.model import PARA_HEADS, MultitaskBert
    gen = torch.Generator().manual_seed(0)
    h, u, v = (torch.randn(3, 32, generator=gen) for _ in range(3))
    fake_pair = lambda batch, joined: h if joined else (u, v)  # noqa: E731 (sentence vectors, no encoder)
    for mode in PARA_HEADS:
        torch.manual_seed(0)
        model = MultitaskBert(BertModel(tiny_config()), tasks=("para",), para_head=mode).eval()
        for head in model.heads.values():  # heads start with zero biases: make them count
            for p in head.parameters():
                p.data.normal_(0, 0.5, generator=gen)
        with patched(model, _pair=fake_pair):
            logits = model.paraphrase_head_logits({})
        siamese = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)
        with torch.no_grad():
            parts = {"cross": [("paraphrase", h)], "siamese": [("paraphrase", siamese)],
                     "cross+siamese": [("paraphrase", h), ("paraphrase_siamese", siamese)]}[mode]
            expected = torch.cat([model.heads[name](features) for name, features in parts], dim=-1)
        compare(f"paraphrase logits (B, K) with para_head={mode!r}", logits, expected, atol=1e-6)
