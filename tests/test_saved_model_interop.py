"""The saved model folder in the two libraries a user brings to it: `transformers` loads the encoder with no
unused key and computes what ours does; `sentence-transformers` (an optional test extra: skipped when absent)
embeds exactly as `MultitaskBert.encode` does, with each pooling and past the trained max length; and the
card's YAML header is what the hub reads. Tiny random BERT, plus the embedded all-MiniLM-L6-v2 on a long input."""
import json
import logging

import numpy as np
import pytest
import torch

from minibert import BertModel, Tokenizer, embedded_model_dir
from tasks.domain.model import MultitaskBert

SENTS = ["the good movie", "a cat sits on the mat", "why", "how do i learn to cook the dog", "great film"]
LONG = " ".join(["the cat sits on the mat and the dog runs on the grass"] * 20)  # far past any max length
SCORES = {"sst": 0.4123, "para": 0.8, "sts": 0.7, "overall": 0.6}


def tiny_model(checkpoint, pooling="mean", max_length=40, seed=0):
    torch.manual_seed(seed)
    encoder = BertModel.from_pretrained(checkpoint, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return MultitaskBert(encoder, tokenizer=Tokenizer.from_pretrained(checkpoint), pooling=pooling,
                         max_length=max_length).eval()


@pytest.fixture(scope="module")
def folders(tiny_checkpoint, tmp_path_factory):
    """One saved folder per pooling, 40 tokens per input (the tiny model has 64 positions)."""
    root = tmp_path_factory.mktemp("ecosystem")
    out = {}
    for pooling in ("mean", "cls", "pooler"):
        model = tiny_model(tiny_checkpoint, pooling)
        out[pooling] = model, model.save_pretrained(root / pooling, card={"dev_scores": SCORES})
    return out


def test_transformers_loads_the_encoder_silently_and_computes_ours(folders, capfd):
    transformers = pytest.importorskip("transformers")
    model, folder = folders["mean"]
    capfd.readouterr()
    hf, info = transformers.BertModel.from_pretrained(folder, output_loading_info=True)
    printed = "".join(capfd.readouterr())
    assert "UNEXPECTED" not in printed and "heads." not in printed  # the load report lists no unused key
    assert not info["unexpected_keys"] and not info["missing_keys"] and not info["mismatched_keys"]
    batch = model.tokenizer(SENTS + [LONG], max_length=40)
    with torch.no_grad():
        ours = model.bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        theirs = hf.eval()(**batch)
    real = batch["attention_mask"].bool()  # padded positions are used by nothing
    assert torch.allclose(ours.last_hidden_state[real], theirs.last_hidden_state[real], atol=1e-5)
    assert torch.allclose(ours.pooler_output, theirs.pooler_output, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_sentence_transformers_embeds_as_our_encode(folders, pooling, capfd, caplog):
    st = pytest.importorskip("sentence_transformers")
    model, folder = folders[pooling]
    capfd.readouterr()
    with caplog.at_level(logging.WARNING):
        loaded = st.SentenceTransformer(str(folder), device="cpu")
    printed = "".join(capfd.readouterr())
    assert "UNEXPECTED" not in printed and "No sentence-transformers model found" not in printed
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # e.g. a guessed pooling
    assert loaded.max_seq_length == 40  # the trained length, not the tokenizer's 512
    assert len(model.tokenizer(LONG, max_length=512)["input_ids"][0]) > 40  # LONG is cut by both
    sentences = SENTS + [LONG]
    assert np.allclose(loaded.encode(sentences), model.encode(sentences), atol=1e-5)
    assert np.allclose(loaded.encode(sentences, normalize_embeddings=True),
                       model.encode(sentences, normalize_embeddings=True), atol=1e-5)
    assert np.allclose(loaded.encode(LONG), model.encode(LONG), atol=1e-5)  # one string: (C,) in both


def test_pooler_pooling_is_cls_then_the_poolers_dense_and_tanh(folders):
    model, folder = folders["pooler"]
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Dense"]
    assert json.loads((folder / "1_Pooling" / "config.json").read_text())["pooling_mode_cls_token"] is True
    dense = json.loads((folder / "2_Dense" / "config.json").read_text())
    assert dense["activation_function"] == "torch.nn.modules.activation.Tanh" and dense["in_features"] == 32
    assert "no such pooling mode" in (folder / "README.md").read_text()  # the card says what the files do
    _, mean_folder = folders["mean"]
    assert not (mean_folder / "2_Dense").exists()
    config = json.loads((mean_folder / "1_Pooling" / "config.json").read_text())
    assert config["pooling_mode_mean_tokens"] is True and config["pooling_mode_cls_token"] is False
    assert json.loads((mean_folder / "sentence_bert_config.json").read_text()) == {"max_seq_length": 40,
                                                                                  "do_lower_case": False}


def test_the_card_header_is_what_the_hub_reads(folders):
    yaml = pytest.importorskip("yaml")
    _, folder = folders["mean"]
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["library_name"] == "sentence-transformers" and header["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert {"minibert", "sentence-transformers"} <= set(header["tags"])
    assert header["datasets"] == ["stanfordnlp/sst", "quora", "mteb/stsbenchmark-sts"]
    assert header["metrics"] == ["accuracy", "pearsonr"]
    results = {r["task"]["name"]: r["metrics"][0] for r in header["model-index"][0]["results"]}
    assert results["SST-5 sentiment"] == {"type": "accuracy", "value": 0.4123, "name": "dev accuracy"}
    assert results["STS benchmark similarity"]["type"] == "pearsonr" and results["STS benchmark similarity"]["value"] == 0.7
    assert "# minibert fine-tuned model" in text and "2_Dense" not in text
    from huggingface_hub import ModelCard  # the hub's own reader: the model-index parses into eval results
    data = ModelCard(text).data
    assert sorted((r.dataset_type, r.metric_type, r.metric_value) for r in data.eval_results) == [
        ("mteb/stsbenchmark-sts", "pearsonr", 0.7), ("quora", "accuracy", 0.8), ("stanfordnlp/sst", "accuracy", 0.4123)]


def test_a_local_base_checkpoint_is_not_named_as_the_hub_base_model(tiny_checkpoint, tmp_path):
    yaml = pytest.importorskip("yaml")
    model = tiny_model(tiny_checkpoint)
    folder = model.save_pretrained(tmp_path / "m", card={"base_checkpoint": str(tiny_checkpoint)})
    header = yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])
    assert "base_model" not in header and "model-index" not in header  # no hub id, no recorded scores
    assert f"`{tiny_checkpoint}`" in (folder / "README.md").read_text()


def test_embedded_minilm_past_128_tokens_in_sentence_transformers(tmp_path):
    """The issue's case on real weights: trained at 128 tokens, a longer input. sentence-transformers read 512
    before the folder said 128 (cosine 0.991 with ours on a 227-token input); now the embeddings agree."""
    st = pytest.importorskip("sentence_transformers")
    try:
        embedded_model_dir()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    model = MultitaskBert(BertModel.from_pretrained(), tasks=("sst",), tokenizer=Tokenizer.from_pretrained()).eval()
    folder = model.save_pretrained(tmp_path / "minilm")
    long = ("The film opens slowly , but the second half , with its patient camera and its quiet , generous "
            "performances , earns every minute of its running time . ") * 8
    assert len(model.tokenizer(long, max_length=512)["input_ids"][0]) > 200
    sentences = ["A cat sits on the mat.", "Stocks fell sharply today.", long]
    ours = model.encode(sentences)
    theirs = st.SentenceTransformer(str(folder), device="cpu").encode(sentences)
    assert ours.shape == (3, 384) and np.allclose(theirs, ours, atol=1e-5)
