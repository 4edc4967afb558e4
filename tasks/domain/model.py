"""One shared BERT encoder with a small head per task (sentiment, paraphrase, similarity).

Sentence embedding: [CLS], the pooler, or the masked mean of the last hidden states (what
all-MiniLM-L6-v2 was trained with). Pairs reach the heads in one of two ways:
- Siamese: each sentence encoded alone into u and v, then compared — [u; v; |u−v|; u∗v] → MLP for
  paraphrase (SBERT's classification objective), cos(u, v) for similarity;
- cross-encoder: one sequence `[CLS] a [SEP] b [SEP]`, so every layer attends across the two sentences,
  then a linear layer on the pair's embedding.
Paraphrase can also train both heads side by side ("cross+siamese"), each with its own loss, and predict
from the mean of their logits: a two-member ensemble on one shared encoder.
The method names `predict_sentiment`, `predict_paraphrase`, `predict_similarity` are the coursework's. On the
coursework's tensors they return what its evaluation code expects (logits; similarity on 0–5); on raw strings,
answers: labels with probabilities, and the similarity. `predict_sentiment_logits` and
`predict_paraphrase_logits` give the raw logits for either input. `encode` turns sentences into embeddings the
way sentence-transformers' `encode` does (a NumPy array unless `convert_to_tensor`). A trained model is kept as
a folder (`save_pretrained`, `from_pretrained`: see tasks/domain/saved_model.py).
"""
from __future__ import annotations

from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import PairCollator, PairExample, SentenceCollator, SentenceExample
from .saved_model import load_model_folder, save_model_folder

POOLINGS = ("mean", "cls", "pooler")
PARA_HEADS = ("cross", "siamese", "cross+siamese")
STS_HEADS = ("cosine", "cross")
SENTIMENT_HEADS = ("linear", "reference")  # reference: the 3-phase paper's head on a frozen encoder
STS_COSINE_MAPS = ("clamp", "affine")


class SentimentPrediction(NamedTuple):
    """`predict_sentiment` on strings: the most probable class and every class's probability (softmax). For a
    list of N sentences, arrays (N,) and (N, num_labels); for one string, an int and (num_labels,)."""
    label: Union[int, np.ndarray]
    probabilities: np.ndarray


class ParaphrasePrediction(NamedTuple):
    """`predict_paraphrase` on strings: label 1 (paraphrase) when the probability σ(logit) is above 0.5, else 0.
    Arrays (N,) for N pairs; an int and a float for one pair of strings."""
    label: Union[int, np.ndarray]
    probability: Union[float, np.ndarray]


def cosine_to_unit(cos: torch.Tensor, how: str = "clamp") -> torch.Tensor:
    """The cosine head's score on the 0–1 scale (the label / 5) that the loss and the predictions use.

    "clamp": the cosine itself (trained against label / 5; a prediction is 5 · clamp(cos, 0, 1), so every
    negative cosine reads as 0); "affine": (cos + 1) / 2, all of [−1, 1] onto [0, 1], prediction 5 · (cos + 1) / 2.
    """
    if how == "clamp":
        return cos
    if how == "affine":
        return (cos + 1.0) / 2.0
    raise ValueError(f"sts_cosine_map must be one of {STS_COSINE_MAPS}, got {how!r}")


def multi_sample_dropout(head: Callable[[torch.Tensor], torch.Tensor], drop: nn.Module, h: torch.Tensor,
                         samples: int = 1) -> torch.Tensor:
    """Multi-sample dropout (Inoue 2019): in training, the mean of head(drop(h)) over `samples` dropout masks;
    one pass otherwise (in eval mode every mask is the identity)."""
    if samples <= 1 or not drop.training:
        return head(drop(h))
    return torch.stack([head(drop(h)) for _ in range(samples)]).mean(0)


# exercise: mean_pool — The mean of the real tokens' vectors, padding left out. hint: a row may be all padding
def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the real (unpadded) tokens' vectors: (B, T, C), (B, T) -> (B, C)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


def siamese_mlp(C: int, dropout: float) -> nn.Module:
    """SBERT's classifier on the pair's features [u; v; |u−v|; u∗v]: (B, 4C) -> (B, 1)."""
    return nn.Sequential(nn.Linear(4 * C, C), nn.GELU(), nn.Dropout(dropout), nn.Linear(C, 1))


def join_pair(ids_1: torch.Tensor, mask_1: torch.Tensor, ids_2: torch.Tensor, mask_2: torch.Tensor,
              pad_id: int = 0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two separately tokenised batches `[CLS] a [SEP]`, `[CLS] b [SEP]` -> one `[CLS] a [SEP] b [SEP]` batch.

    Drops b's [CLS], sets token_type_ids to 1 on b's part, and re-pads to the longest joined row.
    Returns input_ids, token_type_ids, attention_mask, each (B, T).
    """
    len_1, len_2 = mask_1.sum(1), mask_2.sum(1) - 1  # b loses its [CLS]
    total = len_1 + len_2
    B, T = ids_1.size(0), int(total.max())
    positions = torch.arange(T, device=ids_1.device).expand(B, T)  # (B, T)
    in_a = positions < len_1[:, None]
    in_b = (positions >= len_1[:, None]) & (positions < total[:, None])
    idx_a = positions.clamp(max=ids_1.size(1) - 1)
    idx_b = (positions - len_1[:, None] + 1).clamp(0, ids_2.size(1) - 1)
    ids = torch.where(in_a, ids_1.gather(1, idx_a), torch.where(in_b, ids_2.gather(1, idx_b), pad_id))
    return ids, in_b.long(), (in_a | in_b).long()


def reference_head(hidden_size: int, num_labels: int, middle: int = 100, dropout: float = 0.3) -> nn.Module:
    """The 3-phase reference's "complex" Classifier_head (src/head.py): dropout, Linear(C, 100), dropout,
    Linear(100, K). There is no activation between the two linear layers (so it is a rank-100 linear map with
    dropout), and PyTorch's default initialisation, as there."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, middle), nn.Dropout(dropout),
                         nn.Linear(middle, num_labels))


class MultitaskBert(nn.Module):
    """The encoder plus the heads of the requested tasks; unused heads are not built.

    `max_length` and `symmetric_pairs` say how inputs are read (tokens per sentence or joined pair; a pair's
    prediction averaged over both orders); they travel with the saved model so predictions made later read
    the input as training did. `tokenizer` lets `encode` and the predict methods take raw strings.
    """

    def __init__(self, encoder: nn.Module, tasks: Sequence[str] = ("sst", "para", "sts"), num_labels: int = 5,
                 pooling: str = "mean", para_head: str = "cross", sts_head: str = "cosine",
                 dropout: Optional[float] = None, max_length: int = 128, symmetric_pairs: bool = False,
                 tokenizer=None, sts_cosine_map: str = "clamp", head_dropout_samples: int = 1, sentiment_head: str = "linear"):
        super().__init__()
        for name, value, allowed in (("pooling", pooling, POOLINGS), ("para_head", para_head, PARA_HEADS),
                                     ("sts_head", sts_head, STS_HEADS), ("sts_cosine_map", sts_cosine_map, STS_COSINE_MAPS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if sts_cosine_map != "clamp" and sts_head != "cosine":
            raise ValueError(f"sts_cosine_map {sts_cosine_map!r} maps a cosine: it needs sts_head 'cosine'")
        if head_dropout_samples < 1:
            raise ValueError(f"head_dropout_samples must be >= 1, got {head_dropout_samples}")
        if sentiment_head not in SENTIMENT_HEADS:
            raise ValueError(f"sentiment_head must be one of {SENTIMENT_HEADS}, got {sentiment_head!r}")
        C = encoder.config.hidden_size
        self.bert = encoder
        self.tasks, self.pooling, self.para_mode, self.sts_mode = tuple(tasks), pooling, para_head, sts_head
        self.max_length, self.symmetric_pairs, self.tokenizer = max_length, symmetric_pairs, tokenizer
        self.sts_cosine_map = sts_cosine_map  # saved with the heads: predictions must map as training did
        self.head_dropout_samples = head_dropout_samples  # training only (eval has no dropout): not saved
        self.drop = nn.Dropout(encoder.config.hidden_dropout_prob if dropout is None else dropout)
        self.heads = nn.ModuleDict()
        self.num_labels, self.sentiment_head = num_labels, sentiment_head
        if "sst" in tasks or "cfimdb" in tasks:
            self.heads["sentiment"] = nn.Linear(C, num_labels)
        if "para" in tasks:
            self.heads["paraphrase"] = siamese_mlp(C, self.drop.p) if para_head == "siamese" else nn.Linear(C, 1)
            if para_head == "cross+siamese":
                self.heads["paraphrase_siamese"] = siamese_mlp(C, self.drop.p)
        if "sts" in tasks and sts_head == "cross":
            self.heads["similarity"] = nn.Linear(C, 1)
        for head in self.heads.values():
            for m in head.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
        if "sentiment" in self.heads and sentiment_head == "reference":
            self.heads["sentiment"] = reference_head(C, num_labels)  # PyTorch's initialisation, as the reference
        self.task_heads = tuple(self.heads)  # what a saved model keeps (training may add projection heads)

    def head_config(self) -> Dict[str, object]:
        """What it takes to rebuild this model around a checkpoint's encoder."""
        return dict(tasks=list(self.tasks), num_labels=self.num_labels, pooling=self.pooling, para_head=self.para_mode,
                    sts_head=self.sts_mode, dropout=self.drop.p, max_length=self.max_length,
                    symmetric_pairs=self.symmetric_pairs, sts_cosine_map=self.sts_cosine_map,
                    sentiment_head=self.sentiment_head)

    def encoder_parameters(self):
        """The shared encoder's parameters (the trainer gives them --lr, the rest --head_lr; PCGrad projects them)."""
        return self.bert.parameters()

    def _head(self, name: str) -> nn.Module:
        if name not in self.heads:
            raise ValueError(f"this model has no {name} head (it was built for tasks {list(self.tasks) or 'none'})")
        return self.heads[name]

    # ---- a saved model folder (tasks/domain/saved_model.py) ------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path=None, allow_no_heads: bool = False, **config_overrides) -> "MultitaskBert":
        """Encoder, heads and tokenizer from a folder written by `save_pretrained`. A plain encoder checkpoint
        (no trained heads) is refused unless `allow_no_heads`, which gives a head-less model for `encode`."""
        return load_model_folder(cls, name_or_path, allow_no_heads=allow_no_heads, **config_overrides)

    def save_pretrained(self, folder, tokenizer=None, card: Optional[dict] = None):
        """Write the folder `from_pretrained` and `transformers.BertModel.from_pretrained` read."""
        return save_model_folder(self, tokenizer or self.tokenizer, folder, card or {})

    # ---- shared encoding ---------------------------------------------------------------------------------
    def embed(self, input_ids, attention_mask, token_type_ids=None, inputs_embeds=None) -> torch.Tensor:
        """One vector per sequence: (B, T) ids -> (B, C)."""
        out = self.bert(input_ids, attention_mask, token_type_ids, inputs_embeds=inputs_embeds)
        if self.pooling == "pooler":
            return out.pooler_output
        if self.pooling == "cls":
            return out.last_hidden_state[:, 0]
        return mean_pool(out.last_hidden_state, attention_mask)

    def _pair(self, batch: Dict[str, torch.Tensor], joined: bool):
        """The pair as one joined sequence (cross) or as two embeddings (Siamese), from either batch form."""
        if joined:
            if "input_ids" not in batch:  # two separately tokenised sentences: join them here
                ids, types, mask = join_pair(batch["input_ids_1"], batch["attention_mask_1"],
                                             batch["input_ids_2"], batch["attention_mask_2"], self.bert.config.pad_token_id)
                batch = dict(input_ids=ids, token_type_ids=types, attention_mask=mask)
            return self.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        u = self.embed(batch["input_ids_1"], batch["attention_mask_1"], batch.get("token_type_ids_1"))
        v = self.embed(batch["input_ids_2"], batch["attention_mask_2"], batch.get("token_type_ids_2"))
        return u, v

    # ---- per-task outputs on a collated batch -------------------------------------------------------------
    def sentiment_logits(self, batch) -> torch.Tensor:
        """(B, num_labels)"""
        h = self.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        return self._dropped_head("sentiment", h)

    def _dropped_head(self, name: str, h: torch.Tensor) -> torch.Tensor:
        """head(dropout(h)); under --head_dropout_samples K, averaged over K masks in training."""
        return multi_sample_dropout(self._head(name), self.drop, h, self.head_dropout_samples)

    # exercise: paraphrase_head — Cross-encoder logit and/or Siamese MLP on [u; v; |u−v|; u∗v]. hint: _pair, _dropped_head
    def paraphrase_head_logits(self, batch) -> torch.Tensor:
        """(B, K): one logit per paraphrase head (K = 2 for cross+siamese, else 1); each is trained on its own."""
        logits = []
        if self.para_mode != "siamese":  # the cross-encoder
            logits.append(self._dropped_head("paraphrase", self._pair(batch, joined=True)))
        if self.para_mode != "cross":  # the Siamese [u; v; |u−v|; u∗v] MLP
            head = "paraphrase_siamese" if self.para_mode == "cross+siamese" else "paraphrase"
            u, v = self._pair(batch, joined=False)
            logits.append(self._dropped_head(head, torch.cat([u, v, (u - v).abs(), u * v], dim=-1)))
        return torch.cat(logits, dim=-1)

    def paraphrase_logits(self, batch) -> torch.Tensor:
        """(B,): one logit, > 0 means paraphrase (the mean over the heads)."""
        return self.paraphrase_head_logits(batch).mean(-1)

    def similarity_scores(self, batch) -> torch.Tensor:
        """(B,) on the 0–1 scale (the label / 5): the cosine (mapped by `sts_cosine_map`) for Siamese, a sigmoid
        for the cross-encoder."""
        if self.sts_mode == "cross":
            return torch.sigmoid(self._dropped_head("similarity", self._pair(batch, joined=True)).squeeze(-1))
        u, v = self._pair(batch, joined=False)
        return cosine_to_unit(F.cosine_similarity(u, v, dim=-1), self.sts_cosine_map)

    # ---- raw strings -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _on_text(self, outputs: Callable, texts_1, texts_2=None, mode: str = "sentence", batch_size: int = 64,
                 both_orders: bool = False, show_progress_bar: bool = False) -> torch.Tensor:
        """`outputs(batch)` for raw strings: tokenised as the processors do, run in batches of similar length,
        returned in input order on the CPU. `both_orders` averages a pair's outputs over (a, b) and (b, a)."""
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass MultitaskBert(..., tokenizer=tok) or load it "
                             "with MultitaskBert.from_pretrained(folder)")
        a = [texts_1] if isinstance(texts_1, str) else list(texts_1)
        b = None if texts_2 is None else [texts_2] if isinstance(texts_2, str) else list(texts_2)
        if not a:
            raise ValueError("no sentences given")
        if b is not None and len(b) != len(a):
            raise ValueError(f"got {len(a)} first and {len(b)} second sentences; pairs need as many of each")
        if b is None:
            examples = [SentenceExample(str(i), t) for i, t in enumerate(a)]
            collate = SentenceCollator(self.tokenizer, self.max_length)
        else:
            examples = [PairExample(str(i), x, y) for i, (x, y) in enumerate(zip(a, b))]
            collate = PairCollator(self.tokenizer, mode, self.max_length)
        device = next(self.parameters()).device
        order = sorted(range(len(examples)), key=lambda i: len(a[i]) + (len(b[i]) if b else 0))
        out: List[Optional[torch.Tensor]] = [None] * len(examples)
        was_training = self.training
        self.eval()
        bar = tqdm(total=len(order), unit="ex", disable=not show_progress_bar, mininterval=1.0)
        try:
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                chunks = [[examples[i] for i in idx]]
                if both_orders:
                    chunks.append([PairExample(e.id, e.sentence2, e.sentence1) for e in chunks[0]])
                values = [outputs({k: v.to(device) for k, v in collate(c).items() if torch.is_tensor(v)}).float()
                          for c in chunks]
                for i, v in zip(idx, (sum(values) / len(values)).cpu()):
                    out[i] = v
                bar.update(len(idx))
        finally:
            bar.close()
            self.train(was_training)
        return torch.stack(out)

    def encode(self, sentences: Union[str, Sequence[str]], batch_size: int = 32, show_progress_bar: bool = False,
               normalize_embeddings: bool = False, convert_to_tensor: bool = False, *, normalize: bool = False):
        """Sentence embeddings (this model's pooling) in input order, as sentence-transformers' `encode` gives
        them: a float32 NumPy array (N, C), or (C,) for a single string; a CPU tensor if `convert_to_tensor`.
        `normalize_embeddings` (or its short name `normalize`) scales each to length 1; off by default, as in
        the model folder's sentence-transformers files, so SentenceTransformer(folder).encode gives the same."""
        emb = self._on_text(lambda batch: self.embed(batch["input_ids"], batch["attention_mask"],
                                                     batch.get("token_type_ids")), sentences, batch_size=batch_size,
                            show_progress_bar=show_progress_bar)  # (N, C)
        if normalize_embeddings or normalize:
            emb = F.normalize(emb, dim=-1)
        if isinstance(sentences, str):
            emb = emb[0]
        return emb if convert_to_tensor else emb.numpy()

    # ---- the coursework API: its tensors, or raw strings (predict_paraphrase(sentences_1, sentences_2)) ------
    def predict_sentiment_logits(self, input_ids, attention_mask=None, *, batch_size: int = 64) -> torch.Tensor:
        """(B, num_labels) logits, from the coursework's tensors or from strings."""
        if _is_text(input_ids):
            return self._on_text(self.sentiment_logits, input_ids, batch_size=batch_size)
        return self.sentiment_logits(dict(input_ids=input_ids, attention_mask=attention_mask))

    def predict_sentiment(self, input_ids, attention_mask=None, *, batch_size: int = 64):
        """On strings: a SentimentPrediction (label, probabilities). On the coursework's tensors: (B, num_labels)
        logits, what its evaluation code takes the argmax of."""
        logits = self.predict_sentiment_logits(input_ids, attention_mask, batch_size=batch_size)
        if not _is_text(input_ids):
            return logits
        probs = logits.softmax(-1).numpy()  # (N, num_labels)
        labels = probs.argmax(-1)  # (N,)
        if isinstance(input_ids, str):
            return SentimentPrediction(int(labels[0]), probs[0])
        return SentimentPrediction(labels, probs)

    def predict_paraphrase_logits(self, input_ids_1, attention_mask_1=None, input_ids_2=None, attention_mask_2=None,
                                  *, batch_size: int = 64) -> torch.Tensor:
        """(B,) logits, > 0 means paraphrase, from the coursework's tensors or from strings (sentences_1,
        sentences_2)."""
        if _is_text(input_ids_1):
            return self._on_text(self.paraphrase_logits, input_ids_1, attention_mask_1,
                                 "cross" if self.para_mode == "cross" else "siamese", batch_size=batch_size,
                                 both_orders=self.symmetric_pairs)
        return self.paraphrase_logits(dict(input_ids_1=input_ids_1, attention_mask_1=attention_mask_1,
                                           input_ids_2=input_ids_2, attention_mask_2=attention_mask_2))

    def predict_paraphrase(self, input_ids_1, attention_mask_1=None, input_ids_2=None, attention_mask_2=None,
                           *, batch_size: int = 64):
        """On strings (sentences_1, sentences_2): a ParaphrasePrediction (label 0/1, probability σ(logit)).
        On the coursework's tensors: (B,) logits, what its evaluation code takes σ of."""
        logits = self.predict_paraphrase_logits(input_ids_1, attention_mask_1, input_ids_2, attention_mask_2,
                                                batch_size=batch_size)
        if not _is_text(input_ids_1):
            return logits
        prob = torch.sigmoid(logits).numpy()  # (N,)
        label = (logits > 0).long().numpy()  # σ > 0.5, decided on the logit as the processors do
        if isinstance(input_ids_1, str):
            return ParaphrasePrediction(int(label[0]), float(prob[0]))
        return ParaphrasePrediction(label, prob)

    def predict_similarity(self, input_ids_1, attention_mask_1=None, input_ids_2=None, attention_mask_2=None,
                           *, batch_size: int = 64):
        """Similarity on the 0–5 scale: on strings a NumPy array (N,) (a float for one pair of strings), on the
        coursework's tensors a (B,) tensor."""
        if _is_text(input_ids_1):
            cross = self.sts_mode == "cross"
            scores = self._on_text(self.similarity_scores, input_ids_1, attention_mask_1, "cross" if cross else "siamese",
                                   batch_size=batch_size, both_orders=self.symmetric_pairs and cross)
            five = (5.0 * scores).clamp(0.0, 5.0).numpy()
            return float(five[0]) if isinstance(input_ids_1, str) else five
        scores = self.similarity_scores(dict(input_ids_1=input_ids_1, attention_mask_1=attention_mask_1,
                                             input_ids_2=input_ids_2, attention_mask_2=attention_mask_2))
        return (5.0 * scores).clamp(0.0, 5.0)


def _is_text(x) -> bool:
    return isinstance(x, str) or (isinstance(x, (list, tuple)) and len(x) > 0 and isinstance(x[0], str))
