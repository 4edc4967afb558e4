"""The denoising-autoencoder phase (López-Ávila & Suárez-Paniagua 2024, after TSDAE, Wang et al. 2021).

Further training on the task's own sentences, without labels, so the encoder's sentence vector adapts to
the data before any class is seen:

    sentence ─► delete 60% of its words ─► encoder + pooling ─► one vector s (B, C)
                                                                    │  the decoder's only view of the input
    [CLS] w1 w2 … ─► decoder (causal self-attention, cross-attention to s) ─► predict w1 w2 … [SEP]

With teacher forcing, the loss is the cross-entropy of each next token, padding ignored. Because everything
about the sentence must pass through s, the encoder is pushed to put the sentence's content into its vector.

The decoder, by default, is TSDAE's (sentence-transformers' DenoisingAutoEncoderLoss with
tie_encoder_decoder=True, which the paper's code uses): as deep as the encoder, and tied to it. Decoder
layer i *is* encoder layer i's self-attention, feed-forward and their LayerNorms (the same Parameter
objects, run with a causal mask), plus a cross-attention block of its own; the input embeddings are the
encoder's, and an `MLMHead` scores the vocabulary with the tied word embeddings. Only the cross-attentions
and the head are new weights. `tie_encoder_decoder=False` builds a separate, smaller decoder instead
(`decoder_layers`, copied from the encoder's top layers or random), which shares only the embeddings.

The simpler alternative behind the same flag (`--dae_objective mlm`) is BERT's masked-language-model
objective on the MLM head (`BertForMaskedLM`), with 15% of the tokens masked.
"""
from __future__ import annotations

import random
import warnings
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from minibert import BertForMaskedLM
from minibert.checkpoint import CheckpointError
from minibert.functional import attention, merge_heads, split_heads
from minibert.model import FeedForward, MLMHead, SelfAttention

from ..domain.model import MultitaskBert


# ---- noise: pure functions ---------------------------------------------------------------------------------

def delete_words(sentence: str, ratio: float, rng: random.Random) -> str:
    """Delete round(ratio · n) of the n words, at random, keeping at least one and the order of the rest.

    TSDAE draws each word's deletion independently with probability `ratio`; deleting an exact count has the
    same expected noise with no variance, so every input is equally corrupted.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"deletion ratio must be in [0, 1), got {ratio}")
    words = sentence.split()
    if not words:
        return sentence
    keep = max(1, len(words) - round(ratio * len(words)))
    kept = sorted(rng.sample(range(len(words)), keep))
    return " ".join(words[i] for i in kept)


def mask_tokens(input_ids: torch.Tensor, special: torch.Tensor, mask_id: int, vocab_size: int, prob: float,
                generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: choose `prob` of the real tokens (at least one per row); of those, 80% become [MASK],
    10% a random token, 10% stay. Returns (inputs, labels) with labels −100 where nothing is predicted.
    input_ids, special (B, T); special is True for [CLS]/[SEP]/padding, which are never chosen."""
    chosen = (torch.rand(input_ids.shape, generator=generator) < prob) & ~special  # (B, T)
    scores = torch.rand(input_ids.shape, generator=generator).masked_fill(special, -1.0)
    rows = (~chosen.any(1) & (~special).any(1)).nonzero().squeeze(1)
    chosen[rows, scores[rows].argmax(1)] = True  # a row that drew nothing gets one random real token
    labels = input_ids.masked_fill(~chosen, -100)
    roll = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[chosen & (roll < 0.8)] = mask_id
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = torch.randint(vocab_size, input_ids.shape, generator=generator)[swap]
    return inputs, labels


# ---- the decoder -------------------------------------------------------------------------------------------

def causal_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) padding mask -> additive (B, 1, T, T): position t sees the real positions ≤ t."""
    T = attention_mask.size(1)
    allowed = torch.ones(T, T, dtype=torch.bool, device=attention_mask.device).tril()  # (T, T)
    allowed = allowed[None, None] & attention_mask.bool()[:, None, None, :]  # (B, 1, T, T)
    return (~allowed).to(dtype) * torch.finfo(dtype).min


class CrossAttention(nn.Module):
    """Queries from the decoder, keys and values from a memory. Here the memory is the one sentence vector,
    so the softmax over one key is 1 and every position receives out(value(s)): the sentence, nothing else."""

    def __init__(self, config):
        super().__init__()
        C = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query, self.key, self.value, self.out = (nn.Linear(C, C) for _ in range(4))

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        q = split_heads(self.query(x), self.num_heads)  # (B, nh, T, hs)
        k = split_heads(self.key(memory), self.num_heads)  # (B, nh, M, hs)
        v = split_heads(self.value(memory), self.num_heads)
        context, _ = attention(q, k, v)  # (B, nh, T, hs)
        return self.out(merge_heads(context))  # (B, T, C)


def bert_init(module: nn.Module, std: float) -> nn.Module:
    """BERT's initialisation of new weights: Linear ~ N(0, std), biases 0 (LayerNorms start at 1 and 0). Applied
    to new modules only, never to the encoder's that a tied decoder shares."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            nn.init.zeros_(m.bias)
    return module


class DecoderLayer(nn.Module):
    """Post-LayerNorm like the encoder's `Layer`, with a cross-attention block between its two. With `shared`
    (an encoder `Layer`), the self-attention, feed-forward and their norms are that layer's own modules."""

    def __init__(self, config, shared: Optional[nn.Module] = None):
        super().__init__()
        C, eps, std = config.hidden_size, config.layer_norm_eps, config.initializer_range
        if shared is None:
            self.attn, self.attn_norm = bert_init(SelfAttention(config), std), nn.LayerNorm(C, eps=eps)
            self.ffn, self.ffn_norm = bert_init(FeedForward(config), std), nn.LayerNorm(C, eps=eps)
        else:
            self.attn, self.attn_norm, self.ffn, self.ffn_norm = shared.attn, shared.attn_norm, shared.ffn, shared.ffn_norm
        self.cross, self.cross_norm = bert_init(CrossAttention(config), std), nn.LayerNorm(C, eps=eps)
        self.drop = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        a, _ = self.attn(x, mask)
        x = self.attn_norm(x + self.drop(a))
        x = self.cross_norm(x + self.drop(self.cross(x, memory)))
        return self.ffn_norm(x + self.drop(self.ffn(x)))


class SentenceDecoder(nn.Module):
    """Reconstructs a sentence from its vector: decoder layers, then an MLM head on the tied word embeddings.
    `tie_to` (an encoder): one layer per encoder layer, tied to it (TSDAE); else `num_layers` new layers."""

    def __init__(self, config, num_layers: int = 1, tie_to: Optional[nn.Module] = None):
        super().__init__()
        if tie_to is None and num_layers < 1:
            raise ValueError(f"the decoder needs at least one layer, got {num_layers}")
        shared = list(tie_to.layers) if tie_to is not None else [None] * num_layers
        self.layers = nn.ModuleList(DecoderLayer(config, layer) for layer in shared)
        self.tied = tie_to is not None
        self.head = bert_init(MLMHead(config), config.initializer_range)

    def init_from_encoder(self, encoder) -> None:
        """Start an untied decoder's self-attention and feed-forward blocks from the encoder's top layers (a
        copy); the cross-attention and the head stay freshly initialised."""
        if self.tied:
            raise ValueError("a tied decoder already is the encoder's layers")
        top = encoder.layers[-len(self.layers):]
        for mine, theirs in zip(self.layers, top):
            for name in ("attn", "attn_norm", "ffn", "ffn_norm"):
                getattr(mine, name).load_state_dict(getattr(theirs, name).state_dict())

    def forward(self, embeddings: nn.Module, ids: torch.Tensor, attention_mask: torch.Tensor,
                sentence: torch.Tensor) -> torch.Tensor:
        """ids, attention_mask (B, T); sentence (B, C) -> next-token logits (B, T, V)."""
        x = embeddings(ids, torch.zeros_like(ids))  # (B, T, C), the encoder's (tied) embeddings
        mask = causal_mask(attention_mask, x.dtype)
        memory = sentence[:, None, :]  # (B, 1, C)
        for layer in self.layers:
            x = layer(x, mask, memory)
        return self.head(x, embeddings.word.weight)  # (B, T, V)


class DenoisingAutoencoder(MultitaskBert):
    """The encoder with its pooling (a MultitaskBert without task heads, sharing the encoder object) and a
    decoder, tied to the encoder by default (TSDAE). Parameters are named bert.* (the encoder, including the
    layers a tied decoder shares) and decoder.* (new), so the Trainer gives them lr and head_lr.
    `decoder_layers` and `init_from_encoder` apply to an untied decoder only."""

    def __init__(self, encoder: nn.Module, pooling: str = "mean", decoder_layers: int = 1, init_from_encoder: bool = True,
                 tie_encoder_decoder: bool = True):
        super().__init__(encoder, tasks=(), pooling=pooling)
        if tie_encoder_decoder:
            self.decoder = SentenceDecoder(encoder.config, tie_to=encoder)
        else:
            self.decoder = SentenceDecoder(encoder.config, decoder_layers)
            if init_from_encoder:
                self.decoder.init_from_encoder(encoder)

    def reconstruction_logits(self, batch) -> torch.Tensor:
        """Teacher forcing: the decoder reads target[:, :-1] and predicts target[:, 1:]. (B, T−1, V)"""
        s = self.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))  # (B, C), noisy input
        return self.decoder(self.bert.embeddings, batch["target_ids"][:, :-1], batch["target_mask"][:, :-1], s)

    def reconstruction_loss(self, batch) -> torch.Tensor:
        logits = self.reconstruction_logits(batch)
        labels = batch["target_ids"][:, 1:].masked_fill(batch["target_mask"][:, 1:] == 0, -100)  # padding ignored
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)


def masked_lm_around(encoder: nn.Module, checkpoint=None) -> BertForMaskedLM:
    """A BertForMaskedLM whose encoder *is* `encoder` (shared), its MLM head read from the checkpoint when it
    has one (bert-base-uncased does; the sentence-transformers MiniLM does not: its head starts at random)."""
    try:
        with warnings.catch_warnings(record=True) as caught:  # shown only if the head does load
            warnings.simplefilter("always")
            model = BertForMaskedLM.from_pretrained(checkpoint)
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    except CheckpointError:
        warnings.warn(f"checkpoint {checkpoint or 'all-MiniLM-L6-v2'} has no MLM head: the MLM objective starts "
                      "from a randomly initialised head", stacklevel=2)
        model = BertForMaskedLM(encoder.config)
    model.bert = encoder
    return model


# ---- the processor ------------------------------------------------------------------------------------------

class DenoisingProcessor:
    """Unlabelled sentences as batches for the shared Trainer: `num_batches`, `batches(epoch)`, `loss`.

    tsdae: input = the sentence with words deleted, target = the sentence; mlm: masked tokens. The noise is
    drawn afresh every epoch (the paper's "noise on the fly"), from (seed, epoch) so runs repeat exactly.
    """

    def __init__(self, sentences: Sequence[str], tokenizer, objective: str = "tsdae", deletion_ratio: float = 0.6,
                 mask_prob: float = 0.15, batch_size: int = 32, max_length: int = 128, seed: int = 0,
                 dev_sentences: Sequence[str] = ()):
        if objective not in ("tsdae", "mlm"):
            raise ValueError(f"DAE objective must be 'tsdae' or 'mlm', got {objective!r}")
        if not sentences:
            raise ValueError("the DAE phase needs at least one training sentence")
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask probability must be in (0, 1), got {mask_prob}")
        delete_words("x", deletion_ratio, random.Random(0))  # validates the ratio now, not mid-training
        self.sentences, self.dev_sentences = list(sentences), list(dev_sentences)
        self.tokenizer, self.objective, self.ratio, self.mask_prob = tokenizer, objective, deletion_ratio, mask_prob
        self.batch_size, self.max_length, self.seed = batch_size, max_length, seed

    def __len__(self) -> int:
        return len(self.sentences)

    def num_batches(self) -> int:
        return -(-len(self.sentences) // self.batch_size)

    def collate(self, sentences: List[str], rng: random.Random) -> dict:
        tok = self.tokenizer
        if self.objective == "tsdae":
            noisy = tok([delete_words(s, self.ratio, rng) for s in sentences], max_length=self.max_length)
            target = tok(sentences, max_length=self.max_length)
            return {**noisy, "target_ids": target["input_ids"], "target_mask": target["attention_mask"]}
        enc = tok(sentences, max_length=self.max_length)
        ids = enc["input_ids"]
        special = (ids == tok.cls_token_id) | (ids == tok.sep_token_id) | (enc["attention_mask"] == 0)
        generator = torch.Generator().manual_seed(rng.randrange(2 ** 62))
        inputs, labels = mask_tokens(ids, special, tok.mask_token_id, tok.vocab_size, self.mask_prob, generator)
        return {**enc, "input_ids": inputs, "labels": labels}

    def _batches(self, sentences: List[str], seed: int, shuffle: bool) -> Iterator[dict]:
        rng = random.Random(seed)
        order = list(range(len(sentences)))
        if shuffle:
            rng.shuffle(order)
        for i in range(0, len(order), self.batch_size):
            yield self.collate([sentences[j] for j in order[i:i + self.batch_size]], rng)

    def batches(self, epoch: int) -> Iterator[dict]:
        return self._batches(self.sentences, self.seed * 1_000_003 + epoch, shuffle=True)

    def dev_batches(self) -> Iterator[dict]:
        """The dev sentences with fixed noise, for a comparable dev loss after every epoch."""
        return self._batches(self.dev_sentences, self.seed, shuffle=False)

    def loss(self, model, batch) -> torch.Tensor:
        if self.objective == "tsdae":
            return model.reconstruction_loss(batch)
        return model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), labels=batch["labels"])[1]
