"""The saved model folder: round trip, transformers reading its encoder, bad folders, and using it without
training (encode, predict on strings, the predict / evaluate / embed CLIs). Tiny random BERT, tiny data."""
import csv
import json

import numpy as np
import pytest
import torch

from minibert import BertModel, CheckpointError, CheckpointNotFoundError, Tokenizer
from tasks import embed, evaluate, predict
from tasks.launch.inference import build_processor, predict_and_write
from tasks.domain.model import MultitaskBert
from tasks.domain.saved_model import HEADS_KEY, NoHeadsError, save_model_folder

SENTS = ["the good movie", "a cat sits on the mat", "why", "how do i learn to cook the dog", "great film"]
PREFIX = {"sst": "ids-sst", "cfimdb": "ids-cfimdb", "para": "quora", "sts": "sts"}
CARD = {"base_checkpoint": "tiny-bert", "argv": ["tasks/multitask.py", "--epochs", "1"], "epoch": 1,
        "data_sizes": {"sst": {"train": 32, "dev": 32, "test": 32}}, "dev_scores": {"sst": 0.25, "overall": 0.25}}


def make_model(checkpoint, seed=0, **heads):
    """A MultitaskBert whose heads are random but not tiny, so that predictions vary."""
    torch.manual_seed(seed)
    encoder = BertModel.from_pretrained(checkpoint, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = MultitaskBert(encoder, tokenizer=Tokenizer.from_pretrained(checkpoint), **heads)
    with torch.no_grad():
        for p in model.heads.parameters():
            p.normal_()
    return model.eval()


@pytest.fixture(scope="module")
def saved(tiny_checkpoint, tmp_path_factory):
    """A saved model with every kind of head, pairs predicted in both orders, 40 tokens per input."""
    model = make_model(tiny_checkpoint, para_head="cross+siamese", sts_head="cross", symmetric_pairs=True, max_length=40)
    folder = save_model_folder(model, model.tokenizer, tmp_path_factory.mktemp("saved") / "model", CARD)
    return model, folder


def test_folder_round_trips_encoder_heads_and_tokenizer(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == [
        "1_Pooling", "README.md", "config.json", "heads.safetensors", "model.safetensors", "modules.json",
        "sentence_bert_config.json", "special_tokens_map.json", "tokenizer_config.json", "vocab.txt"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary sibling left
    config = json.loads((folder / "config.json").read_text())
    assert config["hidden_size"] == 32 and config["architectures"] == ["BertModel"]
    assert config[HEADS_KEY] == {**model.head_config(), "labels": {
        "sst": ["very negative", "negative", "neutral", "positive", "very positive"],
        "para": ["not a paraphrase", "paraphrase"], "sts": "similarity from 0 (unrelated) to 5 (same meaning), a float"},
        "class": "tasks.domain.model:MultitaskBert"}  # what rebuilds it, named for readers that do not import tasks/
    loaded = MultitaskBert.from_pretrained(folder)
    assert not loaded.training and loaded.head_config() == model.head_config()
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    assert loaded.tokenizer(SENTS)["input_ids"].tolist() == model.tokenizer(SENTS)["input_ids"].tolist()
    card = (folder / "README.md").read_text()
    for fact in ("`tiny-bert`", "python tasks/multitask.py --epochs 1", "| sst | accuracy | 0.2500 |", "epoch 1",
                 "| sst | 32 | 32 | 32 |", "Intended use and limits", "2 layers, 32 wide", "cross+siamese"):
        assert fact in card


def test_transformers_loads_the_encoder_with_no_unused_key(saved):
    transformers = pytest.importorskip("transformers")
    model, folder = saved
    hf, info = transformers.BertModel.from_pretrained(folder, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"] and not info["mismatched_keys"]
    batch = model.tokenizer(SENTS)
    with torch.no_grad():
        ours = model.bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        theirs = hf.eval()(**batch)
    assert torch.allclose(ours.last_hidden_state, theirs.last_hidden_state, atol=1e-5)
    assert torch.allclose(ours.pooler_output, theirs.pooler_output, atol=1e-5)


def test_saving_again_replaces_the_folder_and_a_failed_save_keeps_the_old_one(tiny_checkpoint, tmp_path, monkeypatch):
    from tasks.domain import saved_model

    folder = tmp_path / "model"
    make_model(tiny_checkpoint, seed=1, tasks=("sst",)).save_pretrained(folder)
    second = make_model(tiny_checkpoint, seed=2, tasks=("para",))
    second.save_pretrained(folder, card=CARD)
    assert MultitaskBert.from_pretrained(folder).tasks == ("para",)

    def broken(*args):
        raise OSError("disk full")
    monkeypatch.setattr(saved_model, "_write_weights", broken)
    with pytest.raises(OSError, match="disk full"):
        make_model(tiny_checkpoint, tasks=("sts",)).save_pretrained(folder)
    assert MultitaskBert.from_pretrained(folder).tasks == ("para",)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_training_only_heads_are_not_saved(tiny_checkpoint, tmp_path):
    model = make_model(tiny_checkpoint, tasks=("sst",))
    model.heads["cat_sst"] = torch.nn.Linear(64, 32)  # e.g. the adversarial technique's projection head
    model.save_pretrained(tmp_path / "model")
    assert "cat_sst" not in MultitaskBert.from_pretrained(tmp_path / "model").heads


def _rewrite_weights(folder, change, name="heads.safetensors"):
    from safetensors.torch import load_file, save_file
    state = load_file(str(folder / name))
    change(state)
    save_file(state, str(folder / name))


def _old_layout(folder, to):
    """A folder as saved before heads.safetensors: the heads' keys inside model.safetensors, no
    sentence-transformers files."""
    import shutil
    from safetensors.torch import load_file, save_file

    old = shutil.copytree(folder, to)
    state = {**load_file(str(old / "model.safetensors")), **load_file(str(old / "heads.safetensors"))}
    save_file(state, str(old / "model.safetensors"))
    for name in ("heads.safetensors", "modules.json", "sentence_bert_config.json"):
        (old / name).unlink()
    shutil.rmtree(old / "1_Pooling")
    return old


def test_a_folder_saved_before_heads_safetensors_still_loads(saved, tmp_path):
    model, folder = saved
    old = _old_layout(folder, tmp_path / "old")
    loaded = MultitaskBert.from_pretrained(old)
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    assert np.array_equal(loaded.predict_paraphrase(SENTS, SENTS[::-1]).probability,
                          model.predict_paraphrase(SENTS, SENTS[::-1]).probability)
    import shutil
    shutil.copy(folder / "heads.safetensors", old)  # heads in both files: which are the trained ones?
    with pytest.raises(CheckpointError, match="head weights in both model.safetensors and heads.safetensors"):
        MultitaskBert.from_pretrained(old)


def test_wrong_or_partial_folders_say_what_is_wrong(tiny_checkpoint, saved, tmp_path):
    import shutil

    with pytest.raises(NoHeadsError, match="plain encoder checkpoint with no trained task heads"):
        MultitaskBert.from_pretrained(tiny_checkpoint)
    bare = MultitaskBert.from_pretrained(tiny_checkpoint, allow_no_heads=True)
    assert bare.tasks == () and len(bare.heads) == 0 and bare.encode(SENTS).shape == (5, 32)
    with pytest.raises(ValueError, match="no sentiment head"):
        bare.predict_sentiment(SENTS)

    _, good = saved
    partial = shutil.copytree(good, tmp_path / "partial")
    _rewrite_weights(partial, lambda s: s.pop("heads.sentiment.bias"))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): heads\.sentiment\.bias"):
        MultitaskBert.from_pretrained(partial)
    _rewrite_weights(partial, lambda s: s.update({"heads.sentiment.bias": torch.zeros(5), "heads.extra.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): heads\.extra\.weight"):
        MultitaskBert.from_pretrained(partial)

    config = json.loads((good / "config.json").read_text())
    wrong = shutil.copytree(good, tmp_path / "wrong")
    (wrong / "config.json").write_text(json.dumps({**config, HEADS_KEY: {**config[HEADS_KEY], "num_labels": 2}}))
    with pytest.raises(CheckpointError, match=r"mis-shaped keys \(2\): heads\.sentiment\.bias: checkpoint \(5,\) vs model \(2,\)"):
        MultitaskBert.from_pretrained(wrong)
    (wrong / "config.json").write_text(json.dumps({**config, HEADS_KEY: {**config[HEADS_KEY], "pooling": "max"}}))
    with pytest.raises(CheckpointError, match="pooling must be one of"):
        MultitaskBert.from_pretrained(wrong)
    (wrong / "model.safetensors").unlink()
    with pytest.raises(CheckpointNotFoundError, match="no weights file"):
        MultitaskBert.from_pretrained(wrong)
    (partial / "vocab.txt").unlink()
    with pytest.raises(SystemExit, match=r"predict\.py: error: Tokenizer vocabulary .*vocab\.txt does not exist"):
        predict.main(["--model", str(partial)])


def test_encode_batches_by_length_and_keeps_input_order(saved):
    model, _ = saved
    one_by_one = np.stack([model.encode(s) for s in SENTS])  # a single string gives (C,), as sentence-transformers
    together = model.encode(SENTS, batch_size=2)
    assert isinstance(together, np.ndarray) and together.dtype == np.float32 and together.shape == (5, 32)
    assert np.allclose(together, one_by_one, atol=1e-5)
    unit = model.encode(SENTS, normalize_embeddings=True)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-5)
    assert np.allclose(unit, one_by_one / np.linalg.norm(one_by_one, axis=1, keepdims=True), atol=1e-5)
    assert np.array_equal(model.encode(SENTS, normalize=True), unit)  # the short name
    tensor = model.encode(SENTS, convert_to_tensor=True, show_progress_bar=True)
    assert torch.is_tensor(tensor) and np.allclose(tensor.numpy(), together, atol=1e-6)
    with pytest.raises(ValueError, match="no tokenizer"):
        MultitaskBert(model.bert).encode(SENTS)


def test_predict_methods_take_strings_or_the_coursework_tensors(saved):
    from tasks.domain.data import PairExample
    from tasks.domain.processors import ParaphraseProcessor, SimilarityProcessor

    model, _ = saved
    tok = model.tokenizer
    batch = tok(SENTS, max_length=40)
    with torch.no_grad():  # the coursework's tensors: logits, what its evaluation code expects
        from_tensors = model.predict_sentiment(batch["input_ids"], batch["attention_mask"])
    assert from_tensors.shape == (5, 5)
    assert torch.allclose(model.predict_sentiment_logits(SENTS), from_tensors, atol=1e-5)
    # strings: labels and probabilities
    sentiment = model.predict_sentiment(SENTS)
    assert np.allclose(sentiment.probabilities, from_tensors.softmax(-1).numpy(), atol=1e-5)
    assert sentiment.label.tolist() == from_tensors.argmax(-1).tolist()
    one = model.predict_sentiment(SENTS[0])
    assert isinstance(one.label, int) and one.probabilities.shape == (5,)
    assert one.label == sentiment.label[0] and np.allclose(one.probabilities.sum(), 1, atol=1e-5)
    a, b = SENTS, SENTS[::-1]
    # strings go the processors' way: cross-encoder joined, both orders averaged (symmetric_pairs)
    pairs = [PairExample(str(i), x, y) for i, (x, y) in enumerate(zip(a, b))]
    para = ParaphraseProcessor("para", tok, dev=pairs, form="cross+siamese", symmetric=True, max_length=40)
    logits = model.predict_paraphrase_logits(a, b)
    paraphrase = model.predict_paraphrase(a, b)
    assert paraphrase.label.tolist() == para.predict(model, "dev") == (logits > 0).long().tolist()
    assert np.allclose(paraphrase.probability, torch.sigmoid(logits).numpy(), atol=1e-6)
    first = model.predict_paraphrase(a[0], b[0])
    assert isinstance(first.label, int) and isinstance(first.probability, float)
    assert first.label == paraphrase.label[0] and first.probability == pytest.approx(float(paraphrase.probability[0]), abs=1e-5)
    sts = SimilarityProcessor("sts", tok, dev=pairs, form="cross", symmetric=True, max_length=40)
    similarity = model.predict_similarity(a, b)
    assert isinstance(similarity, np.ndarray) and np.allclose(similarity, sts.predict(model, "dev"), atol=1e-5)
    assert model.predict_similarity(a[0], b[0]) == pytest.approx(float(similarity[0]), abs=1e-5)
    one, two = tok(a, max_length=40), tok(b, max_length=40)
    with torch.no_grad():
        from_tensors = model.predict_paraphrase(one["input_ids"], one["attention_mask"], two["input_ids"], two["attention_mask"])
        assert torch.is_tensor(from_tensors) and from_tensors.shape == (5,)
        assert model.predict_similarity(one["input_ids"], one["attention_mask"], two["input_ids"], two["attention_mask"]).shape == (5,)
    with pytest.raises(ValueError, match="5 first and 2 second"):
        model.predict_paraphrase(a, b[:2])


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_predict_cli_writes_the_files_the_end_of_training_writes(saved, tiny_data, tmp_path, capsys):
    model, folder = saved
    files = {name: {"dev": str(tiny_data / f"{PREFIX[name]}-dev.csv"), "test": str(tiny_data / f"{PREFIX[name]}-test-student.csv"),
                    "dev_out": str(tmp_path / "train" / f"{name}-dev-output.csv"),
                    "test_out": str(tmp_path / "train" / f"{name}-test-output.csv")} for name in model.tasks}
    processors = {name: build_processor(name, model, model.tokenizer, files[name]) for name in model.tasks}
    at_training = predict_and_write(model, processors, files, "cpu")  # what run.py does after training
    scores = predict.main(["--model", str(folder), "--data_dir", str(tiny_data), "--predictions_dir", str(tmp_path / "cli")])
    assert scores == at_training and set(scores) == {"sst", "para", "sts"}
    for name in model.tasks:
        for split in ("dev", "test"):
            written = (tmp_path / "cli" / f"{name}-{split}-output.csv").read_bytes()
            assert written == (tmp_path / "train" / f"{name}-{split}-output.csv").read_bytes()
    assert len(_rows(tmp_path / "cli" / "sts-test-output.csv")) == 33 and "predictions written" in capsys.readouterr().out
    predict.main(["--model", str(folder), "--data_dir", str(tiny_data), "--tasks", "sts", "--splits", "test",
                  "--sts_test_out", str(tmp_path / "one" / "sts.csv")])
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["sts.csv"]


def test_evaluate_cli_prints_the_table_with_spearman(saved, tiny_data, capsys):
    _, folder = saved
    result = evaluate.main(["--model", str(folder), "--data_dir", str(tiny_data)])
    out = capsys.readouterr().out
    assert set(result["table"]) == {"sst", "para", "sts", "overall"}
    assert set(result["table"]["sts"]) == {"pearson", "spearman"} and "spearman" in out and "accuracy" in out
    assert -1 <= result["table"]["sts"]["spearman"] <= 1


def test_clis_refuse_untrained_heads_and_unknown_tasks(tiny_checkpoint, saved, tiny_data):
    for cli in (predict, evaluate):
        with pytest.raises(SystemExit, match="no trained task heads"):
            cli.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data)])
    with pytest.raises(SystemExit, match="Could not fetch 'no-such/model'"):
        predict.main(["--model", "no-such/model"])  # offline in the tests: the hub's message, no traceback
    with pytest.raises(SystemExit, match=r"no head for cfimdb \(its tasks: sst, para, sts\)"):
        predict.main(["--model", str(saved[1]), "--tasks", "cfimdb"])


def test_embed_cli_writes_npy_and_prints_similarities(tiny_checkpoint, saved, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("the good movie\n\na cat sits on the mat\nwhy\n", encoding="utf-8")
    emb = embed.main(["--model", str(tiny_checkpoint), "--input", str(tmp_path / "in.txt"), "--output",
                      str(tmp_path / "e.npy"), "--normalize", "--similarity"])
    stored = np.load(tmp_path / "e.npy")
    assert stored.shape == (3, 32) and stored.dtype == np.float32 and np.allclose(stored, emb)
    assert np.allclose(np.linalg.norm(stored, axis=1), 1, atol=1e-5)
    out = capsys.readouterr().out
    assert "3 embeddings of size 32" in out and " 1.000" in out and "a cat sits on the mat" in out
    model, folder = saved
    from_saved = embed.main(["the good movie", "why", "--model", str(folder), "--similarity"])
    assert np.allclose(from_saved, model.encode(["the good movie", "why"]), atol=1e-5)
    with pytest.raises(SystemExit):
        embed.main(["the good movie"])  # neither --output nor --similarity
