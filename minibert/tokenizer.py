"""BERT's WordPiece tokenizer, assembled from the `tokenizers` package.

BERT tokenisation is four steps, each a stock `tokenizers` component: normalise (clean control chars, split
CJK characters, lowercase and strip accents for uncased models), pre-tokenise (split on whitespace and
punctuation), WordPiece (greedy longest-match subwords, `##` marks a continuation), post-process (add
`[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]` and the segment ids). Building it here from vocab.txt, rather than
loading someone's tokenizer.json, keeps every step visible; the tests check it gives exactly the ids of
HuggingFace's `BertTokenizerFast`, including how over-long pairs are truncated.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as _Backend
from tokenizers.models import WordPiece

from .hub import resolve_model_dir

TextInput = Union[str, Sequence[str]]
SPECIAL_TOKENS = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
DEFAULT_MAX_LENGTH = 512  # BERT's position table; used when tokenizer_config.json gives no sane limit


class Encoding(dict):
    """What the tokenizer returns: a dict of `input_ids`, `token_type_ids`, `attention_mask`.

    A dict so it can be splatted into the model (`model(**enc)`); `.to(device)` moves every tensor.
    """

    def to(self, device) -> "Encoding":
        return Encoding({k: v.to(device) if torch.is_tensor(v) else v for k, v in self.items()})


class Tokenizer:
    """WordPiece tokenizer for BERT checkpoints; `Tokenizer.from_pretrained()` reads a checkpoint folder.

    Args:
        vocab_file: path to vocab.txt, one token per line; the line number is the id.
        do_lower_case: lowercase the text (uncased checkpoints). Must match how the checkpoint was trained.
        strip_accents: remove accents; None follows `do_lower_case`, as in the original BERT.
        tokenize_chinese_chars: put spaces around CJK characters so each is its own word.
        model_max_length: default truncation length, in tokens including [CLS]/[SEP].
    """

    def __init__(self, vocab_file: Union[str, os.PathLike], do_lower_case: bool = True,
                 strip_accents: Optional[bool] = None, tokenize_chinese_chars: bool = True,
                 model_max_length: int = DEFAULT_MAX_LENGTH, **special_tokens: str):
        vocab_file = Path(vocab_file)
        if not vocab_file.is_file():
            raise FileNotFoundError(f"Tokenizer vocabulary {vocab_file} does not exist (expected a vocab.txt, one token per line)")
        unknown = set(special_tokens) - set(SPECIAL_TOKENS)
        if unknown:
            raise TypeError(f"Tokenizer() got unexpected arguments {sorted(unknown)}; special tokens are {sorted(SPECIAL_TOKENS)}")
        self.special = {**SPECIAL_TOKENS, **special_tokens}
        with open(vocab_file, encoding="utf-8") as f:
            vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}  # id = line number, as in BERT
        missing = [t for t in self.special.values() if t not in vocab]
        if missing:
            raise ValueError(f"{vocab_file} lacks the special tokens {missing}; is it a BERT vocabulary?")
        self.do_lower_case = do_lower_case
        self.model_max_length = model_max_length

        tok = _Backend(WordPiece(vocab, unk_token=self.special["unk_token"], continuing_subword_prefix="##",
                                 max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
            strip_accents=do_lower_case if strip_accents is None else strip_accents, lowercase=do_lower_case)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        cls, sep = self.special["cls_token"], self.special["sep_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
        tok.decoder = decoders.WordPiece(prefix="##")
        # Registered as special so "[SEP]" typed in the text stays one token and decode can skip them.
        tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in self.special.values()])
        self._tok = tok

    @classmethod
    def from_pretrained(cls, name_or_path: Optional[Union[str, os.PathLike]] = None) -> "Tokenizer":
        """Tokenizer of a checkpoint: None / 'all-MiniLM-L6-v2' (embedded), a local folder, or a hub id.

        Casing, accent stripping and the length limit come from the folder's tokenizer_config.json.
        """
        folder = resolve_model_dir(name_or_path)
        cfg_file = folder / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
        max_len = cfg.get("model_max_length")
        if not isinstance(max_len, int) or not 0 < max_len <= 1_000_000:  # HF writes 1e30 for "no limit"
            max_len = DEFAULT_MAX_LENGTH
        special = {k: cfg[k] for k in SPECIAL_TOKENS if isinstance(cfg.get(k), str)}
        return cls(folder / "vocab.txt", do_lower_case=cfg.get("do_lower_case", True),
                   strip_accents=cfg.get("strip_accents"), tokenize_chinese_chars=cfg.get("tokenize_chinese_chars", True),
                   model_max_length=max_len, **special)

    def __call__(self, text: TextInput, text_pair: Optional[TextInput] = None, max_length: Optional[int] = None,
                 truncation: bool = True, padding: Union[bool, str] = True, return_tensors: Optional[str] = "pt") -> Encoding:
        """Encode one text or a batch (optionally with second segments) into model inputs.

        Over-long inputs are cut to `max_length` tokens (default `model_max_length`), for pairs by taking
        tokens from the end of the longer segment first ("longest first"). `padding=True` pads to the longest
        in the batch, 'max_length' to `max_length`. `return_tensors='pt'` gives (B, T) LongTensors (a single
        str still gives B=1); None gives lists, flat for a single str.
        """
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if not texts:
            raise ValueError("Tokenizer got an empty batch")
        if not all(isinstance(t, str) for t in texts):
            raise TypeError(f"text must be a str or a list of str, got {type(texts[0]).__name__} items")
        pairs = None
        if text_pair is not None:
            pairs = [text_pair] if isinstance(text_pair, str) else list(text_pair)
            if len(pairs) != len(texts) or isinstance(text_pair, str) != single:
                raise ValueError(f"text and text_pair must both be str or lists of equal length, got {len(texts)} and {len(pairs)}")
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        if padding not in (True, False, "longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding must be True/'longest', 'max_length' or False, got {padding!r}")

        max_length = self.model_max_length if max_length is None else max_length
        tok = self._tok
        if truncation:
            tok.enable_truncation(max_length, strategy="longest_first", direction="right")
        else:
            tok.no_truncation()
        if padding in (True, "longest"):
            tok.enable_padding(pad_id=self.pad_token_id, pad_token=self.special["pad_token"])
        elif padding == "max_length":
            tok.enable_padding(pad_id=self.pad_token_id, pad_token=self.special["pad_token"], length=max_length)
        else:
            tok.no_padding()
        encs = tok.encode_batch(texts if pairs is None else list(zip(texts, pairs)))

        out = {"input_ids": [e.ids for e in encs], "token_type_ids": [e.type_ids for e in encs],
               "attention_mask": [e.attention_mask for e in encs]}
        if return_tensors == "pt":
            if len({len(ids) for ids in out["input_ids"]}) > 1:
                raise ValueError("Sequences have different lengths: use padding=True to return tensors")
            return Encoding({k: torch.tensor(v, dtype=torch.long) for k, v in out.items()})
        return Encoding({k: v[0] for k, v in out.items()} if single else out)

    def tokenize(self, text: str) -> List[str]:
        """WordPiece tokens of `text`, without [CLS]/[SEP] and without truncation."""
        self._tok.no_truncation()
        return self._tok.encode(text, add_special_tokens=False).tokens

    def convert_tokens_to_ids(self, tokens: Union[str, Sequence[str]]) -> Union[int, List[int]]:
        """Vocabulary ids; tokens not in the vocabulary map to [UNK]."""
        if isinstance(tokens, str):
            i = self._tok.token_to_id(tokens)
            return self.unk_token_id if i is None else i
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: Union[int, Sequence[int]]) -> Union[str, List[str]]:
        if isinstance(ids, int):
            return self._tok.id_to_token(ids)
        return [self._tok.id_to_token(int(i)) for i in ids]

    def decode(self, ids: Union[Sequence[int], torch.Tensor], skip_special_tokens: bool = True) -> str:
        """Text of one sequence of ids: '##' pieces are glued back on, padding/[CLS]/[SEP] dropped by default."""
        if torch.is_tensor(ids):
            if ids.dim() != 1:
                raise ValueError(f"decode takes one sequence (1-D ids), got shape {tuple(ids.shape)}; loop over the batch")
            ids = ids.tolist()
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def _special_id(self, name: str) -> int:
        return self._tok.token_to_id(self.special[name])

    pad_token_id = property(lambda self: self._special_id("pad_token"))
    unk_token_id = property(lambda self: self._special_id("unk_token"))
    cls_token_id = property(lambda self: self._special_id("cls_token"))
    sep_token_id = property(lambda self: self._special_id("sep_token"))
    mask_token_id = property(lambda self: self._special_id("mask_token"))

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case}, "
                f"model_max_length={self.model_max_length})")
