"""BERT, written to be read top to bottom: small pieces first, the whole model last.

    tokens ─► Embeddings ─► Layer × N ─► last_hidden_state ─► Pooler ([CLS]) ─► pooler_output
                              │
                              └ x = LayerNorm(x + SelfAttention(x));  x = LayerNorm(x + FeedForward(x))

Shapes: B batch, T sequence length, C hidden size, nh heads, hs head size, V vocabulary.
Module names are our own; `checkpoint.py` holds the one table that maps HuggingFace's names onto them.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial
from typing import Iterator, Mapping, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .config import BertConfig
from .functional import additive_attention_mask, attention, dropout, fast_attention, merge_heads, split_heads

# The activations as torch's one-kernel versions: the same functions as functional.gelu and gelu_tanh (which
# write out the formula and are tested against these), one kernel instead of five elementwise ops, so faster,
# and backward keeps one saved tensor instead of four.
ACTIVATIONS = {"gelu": F.gelu, "gelu_new": partial(F.gelu, approximate="tanh"),
               "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"), "relu": torch.relu, "tanh": torch.tanh}
# The same, overwriting their input: for inference, where no backward pass needs the pre-activation.
INPLACE_ACTIVATIONS = {"gelu": torch.ops.aten.gelu_, "gelu_new": partial(torch.ops.aten.gelu_, approximate="tanh"),
                       "gelu_pytorch_tanh": partial(torch.ops.aten.gelu_, approximate="tanh"),
                       "relu": torch.relu_, "tanh": torch.tanh_}


@dataclass
class BertOutput(Mapping):
    """The model's outputs; fields read both as attributes (out.pooler_output) and keys (out["pooler_output"]).

    Fields that were not requested are None and are left out of keys() and of integer indexing, as in
    HuggingFace's ModelOutput, so `out[0]` is always the last hidden state.
    """
    last_hidden_state: torch.Tensor
    pooler_output: Optional[torch.Tensor] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None  # embeddings output + one per layer
    attentions: Optional[Tuple[torch.Tensor, ...]] = None  # one (B, nh, T, T) per layer

    def _present(self):
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, key):
        if isinstance(key, (int, slice)):
            return tuple(v for _, v in self._present())[key]
        if key not in {f.name for f in fields(self)} or getattr(self, key) is None:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(name for name, _ in self._present())

    def __len__(self) -> int:
        return len(self._present())

    def to_tuple(self) -> tuple:
        return tuple(v for _, v in self._present())


class Dropout(nn.Dropout):
    """nn.Dropout (so code that finds and sets dropout modules still does) through functional.dropout, whose CPU
    mask is 2–3× cheaper than torch's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class Embeddings(nn.Module):
    """Token + position + segment embeddings, summed, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.drop = Dropout(config.hidden_dropout_prob)

    # exercise: embeddings — Word (or inputs_embeds) + token type + position, then norm and drop. hint: positions 0..T−1
    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                inputs_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
        T = input_ids.size(1)
        positions = torch.arange(T, device=input_ids.device)  # (T,)
        words = self.word(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        x = words + self.token_type(token_type_ids) + self.position(positions)  # (B, T, C)
        return self.drop(self.norm(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention: project to queries, keys and values, attend per head, merge, project out."""

    def __init__(self, config: BertConfig):
        super().__init__()
        C = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(C, C)
        self.key = nn.Linear(C, C)
        self.value = nn.Linear(C, C)
        self.out = nn.Linear(C, C)
        self.dropout_p = config.attention_probs_dropout_prob
        self.manual = config.attn_implementation == "manual"

    # exercise: self_attention — Project to q, k, v, split heads, attend, merge, project out. hint: attention() gives probs
    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor], output_attentions: bool = False):
        q = split_heads(self.query(x), self.num_heads)  # (B, nh, T, hs)
        k = split_heads(self.key(x), self.num_heads)
        v = split_heads(self.value(x), self.num_heads)
        # The written-out path is the one that can return probabilities. It also trains on the CPU: there SDPA
        # has no kernel with dropout and runs these same ops, but with torch's slower dropout mask.
        cpu_dropout = self.training and self.dropout_p > 0 and x.device.type == "cpu"
        if self.manual or output_attentions or cpu_dropout:
            context, probs = attention(q, k, v, mask, self.dropout_p, self.training)
        else:
            context, probs = fast_attention(q, k, v, mask, self.dropout_p, self.training), None
        return self.out(merge_heads(context)), probs  # (B, T, C), (B, nh, T, T) or None


class FeedForward(nn.Module):
    """Position-wise MLP: widen to intermediate_size, GELU, project back."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.act_ = INPLACE_ACTIVATIONS[config.hidden_act]
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)  # (B, T, 4C); requires grad only where autograd records it (not under no_grad / inference_mode)
        if h.requires_grad:
            return self.down(self.act(h))  # (B, T, C)
        # Inference: nothing keeps the pre-activation for a backward pass, so overwrite it instead of allocating a
        # second (B, T, 4C) buffer. That buffer is the largest in the model, and on the CPU a fresh one costs its
        # page faults in every layer: this makes MiniLM's inference 5-10% faster there.
        return self.down(self.act_(h))  # (B, T, C)


class Layer(nn.Module):
    """One transformer layer of BERT: post-LayerNorm residual blocks (the original BERT's order)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attn = SelfAttention(config)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.drop = Dropout(config.hidden_dropout_prob)

    # exercise: layer — Post-LN: x = norm(x + drop(attn(x))), then x = norm(x + drop(ffn(x))); return x and attn's probs
    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor], output_attentions: bool = False):
        a, probs = self.attn(x, mask, output_attentions)
        x = self.attn_norm(x + self.drop(a))  # residual add, then LayerNorm
        x = self.ffn_norm(x + self.drop(self.ffn(x)))  # residual add, then LayerNorm
        return x, probs


class Pooler(nn.Module):
    """tanh(W h_[CLS] + b): the sentence vector BERT's next-sentence head was trained on."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, C)


class MLMHead(nn.Module):
    """Masked-language-model head: transform, then score every vocabulary word with the (tied) word embeddings."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.act(self.transform(hidden)))  # (B, T, C)
        return F.linear(h, word_embeddings, self.bias)  # (B, T, V): decoder weight tied to the word embeddings


class PreTrainedMixin:
    """Weight initialisation and the from_pretrained / save_pretrained pair shared by the model classes."""

    config: BertConfig

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @classmethod
    def from_pretrained(cls, name_or_path=None, **config_overrides):
        """Load a checkpoint: None / 'all-MiniLM-L6-v2' (embedded), a local folder, or a hub id.

        `config_overrides` replace config.json values, e.g. hidden_dropout_prob=0.3 or attn_implementation="manual".
        """
        from .checkpoint import load_pretrained
        return load_pretrained(cls, name_or_path, **config_overrides)

    def save_pretrained(self, folder) -> None:
        """Write config.json + model.safetensors with HuggingFace's key names."""
        from .checkpoint import save_pretrained
        save_pretrained(self, folder)


def no_padding(attention_mask: Optional[torch.Tensor]) -> bool:
    """True when no position is padding. The mask is then left out: adding zeros changes nothing, and without
    one SDPA may choose its fastest kernel (flash attention on CUDA)."""
    if attention_mask is None:
        return True
    if getattr(torch.compiler, "is_compiling", lambda: False)():  # a data-dependent branch would split a
        return False  # compiled graph in two: keep the mask
    return bool(attention_mask.all())


class BertModel(PreTrainedMixin, nn.Module):
    """The encoder: embeddings, N layers and (optionally) the pooler."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList([Layer(config) for _ in range(config.num_hidden_layers)])
        self.pooler = Pooler(config) if add_pooling_layer else None
        self.apply(self._init_weights)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None, output_hidden_states: bool = False,
                output_attentions: bool = False, inputs_embeds: Optional[torch.Tensor] = None) -> BertOutput:
        """input_ids (B, T); attention_mask (B, T) with 1 for real tokens, 0 for padding; token_type_ids (B, T).

        `inputs_embeds` (B, T, C) replaces the word-embedding lookup (input_ids still give the shape and
        device), which is how adversarial training perturbs the embeddings.
        """
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings ({self.config.max_position_embeddings})")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids, inputs_embeds)  # (B, T, C)
        mask = None if no_padding(attention_mask) else additive_attention_mask(attention_mask, x.dtype)  # (B, 1, 1, T)

        hidden_states = [x] if output_hidden_states else []  # kept only when asked for: each is (B, T, C)
        attentions = []
        for layer in self.layers:
            if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                # recompute this layer's activations in the backward pass instead of storing them
                x, probs = checkpoint(layer, x, mask, output_attentions, use_reentrant=False)
            else:
                x, probs = layer(x, mask, output_attentions)
            if output_hidden_states:
                hidden_states.append(x)
            attentions.append(probs)

        return BertOutput(
            last_hidden_state=x,
            pooler_output=self.pooler(x) if self.pooler is not None else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


class BertForMaskedLM(PreTrainedMixin, nn.Module):
    """BERT with its masked-language-model head (used for further pre-training on task text)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.mlm = MLMHead(config)
        self.mlm.apply(self._init_weights)

    def encoder_parameters(self):
        """The encoder's parameters (a training loop gives them the encoder's learning rate, the head its own)."""
        return self.bert.parameters()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        """Returns (logits (B, T, V), loss or None); labels use -100 for positions that are not predicted."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        logits = self.mlm(hidden, self.bert.embeddings.word.weight)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=-100)
        return logits, loss
