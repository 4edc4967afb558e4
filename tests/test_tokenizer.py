"""minibert.Tokenizer against the reference, HuggingFace BertTokenizerFast, on real CS224N sentences."""
import json

import pytest
import torch

from _datafiles import read_columns
from minibert.hub import resolve_model_dir
from minibert.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers", reason="transformers is the test-only reference")

KEYS = ("input_ids", "token_type_ids", "attention_mask")
TRICKY = ["", "   ", "Hello, World!", "naïve Über café RÉSUMÉ", "北京欢迎你 to Tokyo", "tab\there\x00ctrl\u200bzero-width",
          "emoji 🤗 and ½ and ™", "x" * 101, "un-believable!!! (really?)", "a [MASK] and [SEP] in text", "e.g. U.S.A. $3.50"]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_pretrained()


@pytest.fixture(scope="module")
def hf():
    return transformers.BertTokenizerFast.from_pretrained(str(resolve_model_dir(None)))


def assert_same(ours, ref, where=""):
    for k in KEYS:
        assert isinstance(ours[k], torch.Tensor) and ours[k].dtype == torch.long, k
        assert ours[k].tolist() == ref[k], f"{k} differs {where}"


def compare_batches(tok, hf, texts, pairs=None, batch_size=64, **kw):
    for i in range(0, len(texts), batch_size):
        a, b = texts[i:i + batch_size], (pairs[i:i + batch_size] if pairs else None)
        ref = hf(a, b, padding=True, truncation=True, **kw)
        assert_same(tok(a, b, **kw), ref, f"in batch starting at {i}")


def test_properties_match_reference(tok, hf):
    assert tok.vocab_size == hf.vocab_size == 30522 and len(tok) == len(hf)
    for name in ("pad", "cls", "sep", "mask", "unk"):
        assert getattr(tok, f"{name}_token_id") == getattr(hf, f"{name}_token_id"), name
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id) == (0, 101, 102)
    assert tok.model_max_length == 512 and tok.do_lower_case


def test_tricky_strings_match_reference(tok, hf):
    for s in TRICKY:
        assert tok.tokenize(s) == hf.tokenize(s), repr(s)
        assert tok(s, return_tensors=None) == dict(hf(s)), repr(s)
    assert tok.tokenize("x" * 101) == ["[UNK]"]  # max_input_chars_per_word=100
    assert tok.tokenize("a [MASK] b") == ["a", "[MASK]", "b"]  # special tokens in text are not split


@pytest.mark.parametrize("max_length", [None, 16])
def test_sst_sentences_match_reference(tok, hf, max_length):
    sents = [s for (s,) in read_columns("ids-sst-dev.csv", "sentence")]
    assert len(sents) >= 1000
    compare_batches(tok, hf, sents, max_length=max_length)
    if max_length:
        assert tok(sents[:64], max_length=max_length)["input_ids"].shape == (64, max_length)


@pytest.mark.parametrize("max_length", [None, 16, 32])
def test_quora_and_sts_pairs_match_reference(tok, hf, max_length):
    pairs = read_columns("quora-dev.csv", "sentence1", "sentence2", limit=1000)
    pairs += read_columns("sts-dev.csv", "sentence1", "sentence2")
    assert len(pairs) >= 1000
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    compare_batches(tok, hf, a, b, max_length=max_length)
    if max_length:  # longest-first really cut both the first and the second segment somewhere
        enc = tok(a, b, max_length=max_length, return_tensors=None, padding=False)
        full = tok(a, b, return_tensors=None, padding=False)
        seg_len = lambda types, seg: sum(1 for t in types if t == seg)
        cut_a = sum(seg_len(e, 0) < seg_len(f, 0) for e, f in zip(enc["token_type_ids"], full["token_type_ids"]))
        cut_b = sum(seg_len(e, 1) < seg_len(f, 1) for e, f in zip(enc["token_type_ids"], full["token_type_ids"]))
        assert cut_a > 0 and cut_b > 0
        assert max(len(ids) for ids in enc["input_ids"]) == max_length


def test_long_reviews_truncated_to_model_max_length(tok, hf):
    reviews = [s for (s,) in read_columns("ids-cfimdb-train.csv", "sentence")]
    lengths = [len(ids) for ids in tok(reviews, truncation=False, padding=False, return_tensors=None)["input_ids"]]
    longest = [reviews[i] for i in sorted(range(len(reviews)), key=lengths.__getitem__)[-48:]]
    assert max(lengths) > 512  # one review has 514 tokens, more than BERT's 512 positions
    enc = tok(longest)  # default max_length: model_max_length = 512
    assert enc["input_ids"].shape == (48, 512)
    assert (enc["input_ids"][:, -1][enc["attention_mask"][:, -1] == 1] == tok.sep_token_id).all()
    compare_batches(tok, hf, longest, batch_size=16)
    assert tok(longest, truncation=False, padding=False, return_tensors=None)["input_ids"] == \
        hf(longest, truncation=False)["input_ids"]


def test_output_forms(tok, hf):
    one = tok("Hello there.")
    assert one["input_ids"].shape == (1, 5) and one["attention_mask"].sum() == 5
    assert tok("Hello there.", return_tensors=None)["input_ids"] == [101, 7592, 2045, 1012, 102]
    lists = tok(["a b c", "d"], return_tensors=None)
    assert lists == dict(hf(["a b c", "d"], padding=True))
    assert lists["input_ids"][1] == [101, 1040, 102, 0, 0] and lists["attention_mask"][1] == [1, 1, 1, 0, 0]
    fixed = tok(["a b c", "d"], max_length=8, padding="max_length")
    assert_same(fixed, hf(["a b c", "d"], max_length=8, padding="max_length", truncation=True))
    assert fixed.to("cpu")["input_ids"].shape == (2, 8)
    with pytest.raises(ValueError, match="padding=True"):
        tok(["a b c", "d"], padding=False)
    with pytest.raises(ValueError, match="equal length"):
        tok(["a", "b"], ["c"])


def test_decode_round_trip(tok, hf):
    sents = [s for (s,) in read_columns("ids-sst-dev.csv", "sentence", limit=300)]
    batch = tok(sents)
    for s, ids in zip(sents, batch["input_ids"]):
        text = tok.decode(ids)
        assert text == hf.decode(ids.tolist(), skip_special_tokens=True)
        assert tok.decode(ids, skip_special_tokens=False) == hf.decode(ids.tolist())
        assert tok(text, return_tensors=None, padding=False)["input_ids"] == tok(s, return_tensors=None)["input_ids"]
    assert tok.decode([101, 7592, 2045, 1012, 102, 0, 0]) == "hello there."


def test_tokens_and_ids(tok, hf):
    tokens = tok.tokenize("The unaffable résumé")
    assert tokens == hf.tokenize("The unaffable résumé") == ["the", "una", "##ffa", "##ble", "resume"]
    assert tok.convert_tokens_to_ids(tokens) == hf.convert_tokens_to_ids(tokens)
    assert tok.convert_tokens_to_ids("[MASK]") == 103 and tok.convert_tokens_to_ids("notatoken!") == tok.unk_token_id
    assert tok.convert_ids_to_tokens([101, 102]) == ["[CLS]", "[SEP]"]


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "Hello", "cafe", "café", "##s", "world", "!"]


@pytest.mark.parametrize("lower", [True, False])
def test_cased_and_uncased_tiny_vocab(tmp_path, lower):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    tok = Tokenizer(vocab, do_lower_case=lower)
    if lower:  # lowercased, and accents stripped because strip_accents follows do_lower_case
        assert tok.tokenize("Hello Cafés!") == tok.tokenize("hello cafés!") == ["hello", "cafe", "##s", "!"]
    else:
        assert tok.tokenize("Hello cafés!") == ["Hello", "café", "##s", "!"]
        assert tok.tokenize("hello Cafés!") == ["hello", "[UNK]", "!"]
    ref = transformers.BertTokenizerFast.from_pretrained(str(tmp_path), do_lower_case=lower)
    for s in ["Hello cafés!", "HELLO world", "hello Cafés world!"]:
        assert tok(s, return_tensors=None) == dict(ref(s)), s


def test_from_pretrained_reads_tokenizer_config(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    assert Tokenizer.from_pretrained(tmp_path).tokenize("Hello") == ["hello"]  # no tokenizer_config: uncased
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "model_max_length": 8}))
    cased = Tokenizer.from_pretrained(str(tmp_path))
    assert cased.tokenize("Hello") == ["Hello"] and not cased.do_lower_case
    assert cased(" ".join(["hello"] * 20))["input_ids"].shape == (1, 8)


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        Tokenizer.from_pretrained(tmp_path / "no_such_folder")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"lacks the special tokens.*\[PAD\]"):
        Tokenizer(tmp_path / "vocab.txt")
