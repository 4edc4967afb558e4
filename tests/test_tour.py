"""The learner's tour (minibert/tour.py) on the tiny random checkpoint: what it prints, what it draws."""
import json
import re
import shutil
from contextlib import redirect_stdout
from io import StringIO

import pytest
import torch
import torch.nn.functional as F

from minibert import BertModel, Tokenizer
from minibert.tour import main, tour
from tasks.domain.model import mean_pool


A, B = "the cat sits on the mat.", "a dog runs on grass."
WORDS_A = "the cat sits on the mat .".split()  # the tiny vocabulary holds these words whole
WORDS_B = "a dog runs on grass .".split()


def run(*args, **kwargs):
    out = StringIO()
    with redirect_stdout(out):
        result = (main(list(args)) if args else tour(**kwargs))
    return result, out.getvalue()


@pytest.fixture(scope="module")
def single(tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tour-single")
    result, text = run(A, "--model", str(tiny_checkpoint), "--out", str(folder), "--layer", "1", "--head", "2")
    return result, text, folder


@pytest.fixture(scope="module")
def pair(tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tour-pair")
    result, text = run(A, B, "--model", str(tiny_checkpoint), "--out", str(folder))
    return result, text, folder


def own_attentions(checkpoint, *texts):
    """The model's attention probabilities, computed here without the tour: (L, nh, T, T)."""
    model, tok = BertModel.from_pretrained(checkpoint), Tokenizer.from_pretrained(checkpoint)
    enc = tok(*texts)
    with torch.no_grad():
        out = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], output_attentions=True)
    return torch.stack(out.attentions)[:, 0]


def test_single_sentence_prints_every_step_with_its_shapes(single):
    _, text, _ = single
    T = len(WORDS_A) + 2  # [CLS] ... [SEP]
    expected = [
        "[CLS] " + " ".join(WORDS_A) + " [SEP]", f"input_ids        (1, {T}) (B, T)",
        f"token_type_ids   (1, {T}) = {[0] * T}",
        f"word        (1, {T}, 32)", f"position    ({T}, 32)", f"token type  (1, {T}, 32)", f"LayerNorm   (1, {T}, 32)",
        f"q, k, v      (1, 4, {T}, 8) each = (B, nh, T, hs): 4 heads of 8",
        f"scores       (1, 4, {T}, {T}) = q kᵀ / √8",
        "[CLS] looks at h0→", f"feed-forward 32 -> 37 (1, {T}, 37), gelu, -> 32 (1, {T}, 32)",
        "= hidden_states[2]", "pooler_output (1, 32)", "mean over real tokens (1, 32)",
        "Tokenizer.__call__", "Embeddings.forward", "SelfAttention.forward", "functional.py", "Pooler.forward",
    ]
    for piece in expected:
        assert piece in text, piece
    assert text.index("Tokenizer.__call__") < text.index("Embeddings.forward") < text.index("Layer 0") \
        < text.index("Layer 1") < text.index("Pooler.forward")
    assert "cosine" not in text  # one sentence: nothing to compare


def test_pair_is_one_sequence_with_two_segments_and_the_shapes_follow(pair):
    result, text, _ = pair
    T = len(WORDS_A) + len(WORDS_B) + 3
    assert "[CLS] " + " ".join(WORDS_A) + " [SEP] " + " ".join(WORDS_B) + " [SEP]" in text
    assert f"token_type_ids   (1, {T}) = {[0] * (len(WORDS_A) + 2) + [1] * (len(WORDS_B) + 1)}" in text
    assert f"q, k, v      (1, 4, {T}, 8)" in text and f"scores       (1, 4, {T}, {T})" in text
    assert "batch (2, " in text and "mean over real tokens (2, 32)" in text
    assert result["attentions"].shape == (2, 4, T, T)


def test_pngs_are_written_and_not_empty(single, pair):
    for (result, text, folder), names in ((single, {"attention.png", "attention_layer1_head2.png"}),
                                          (pair, {"attention.png", "attention_layer0_head0.png", "similarity.png"})):
        assert set(result["drawn"]) == names
        for name in names:
            assert (folder / name).stat().st_size > 1000, name
            assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"pictures in {folder}/" in text


def test_drawn_maps_are_the_models_own_attention_probabilities(tiny_checkpoint, single, pair):
    for (result, _, _), texts, name, (layer, head) in ((single, (A,), "attention_layer1_head2.png", (1, 2)),
                                                       (pair, (A, B), "attention_layer0_head0.png", (0, 0))):
        own = own_attentions(tiny_checkpoint, *texts)
        grid = result["drawn"]["attention.png"]  # read back from matplotlib's images
        assert grid.shape == own.shape
        torch.testing.assert_close(grid.float(), own, rtol=0, atol=1e-6)
        torch.testing.assert_close(grid.float().sum(-1), torch.ones(own.shape[:-1]), rtol=0, atol=1e-5)
        torch.testing.assert_close(result["drawn"][name].float(), own[layer, head], rtol=0, atol=1e-6)


def test_printed_cosine_is_F_cosine_similarity_of_the_mean_pooled_embeddings(tiny_checkpoint, pair):
    result, text, _ = pair
    printed = float(re.search(r"cosine similarity of the two sentences: (-?[\d.]+)", text).group(1))
    model, tok = BertModel.from_pretrained(tiny_checkpoint), Tokenizer.from_pretrained(tiny_checkpoint)
    enc = tok([A, B])
    with torch.no_grad():
        u = mean_pool(model(**enc).last_hidden_state, enc["attention_mask"])
    expected = F.cosine_similarity(u[0], u[1], dim=0).item()
    assert abs(printed - expected) <= 5e-5
    assert abs(result["cosine"][0, 1].item() - expected) <= 1e-6
    torch.testing.assert_close(result["drawn"]["similarity.png"].float(), result["cosine"], rtol=0, atol=1e-6)


def test_compare_with_itself_moves_nothing(tiny_checkpoint, tmp_path):
    result, text = run(model=str(tiny_checkpoint), sentences=[A], out=str(tmp_path), compare=str(tiny_checkpoint))
    assert {"compare_attention.png", "compare_layer0_head0.png", "compare_change.png"} <= set(result["drawn"])
    assert result["drawn"]["compare_change.png"].abs().max() == 0
    pre, fine, diff = result["drawn"]["compare_layer0_head0.png"]
    torch.testing.assert_close(pre, fine) and torch.testing.assert_close(diff, torch.zeros_like(diff))
    assert "heads whose attention moved most" in text and (tmp_path / "compare_change.png").stat().st_size > 1000


@pytest.fixture
def fine_tuned(tiny_checkpoint, tmp_path):
    """A folder as the multitask trainer saves it: config.json with "minibert_heads", heads. in the weights."""
    from safetensors.torch import load_file, save_file
    from tasks.domain.model import MultitaskBert
    folder = tmp_path / "fine-tuned"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config["minibert_heads"] = dict(tasks=["sst", "para", "sts"], num_labels=5, pooling="mean", para_head="cross",
                                    sts_head="cosine", max_length=128, label_names={"sst": list("abcde")},
                                    **{"class": "tasks.domain.model:MultitaskBert"})
    (folder / "config.json").write_text(json.dumps(config))
    multitask = MultitaskBert(BertModel.from_pretrained(tiny_checkpoint), tasks=("sst", "para", "sts")).eval()
    state = load_file(str(folder / "model.safetensors"))
    state.update({k: v.contiguous() for k, v in multitask.state_dict().items() if k.startswith("heads.")})
    save_file(state, str(folder / "model.safetensors"))
    return folder, multitask


def test_fine_tuned_folder_without_the_loader_tours_the_encoder_with_a_note(fine_tuned, monkeypatch):
    from tasks.domain.model import MultitaskBert
    monkeypatch.delattr(MultitaskBert, "from_pretrained", raising=False)
    folder, _ = fine_tuned
    result, text = run(model=str(folder), sentences=[A, B], out=None)
    assert text.startswith("note: ") and "encoder only" in text and "Task heads" not in text
    assert result["drawn"] == {} and result["attentions"].shape[:2] == (2, 4)


def test_a_folder_saved_before_the_heads_class_moved_still_finds_it():
    from minibert.tour import _heads_class
    from tasks.domain.model import MultitaskBert
    assert _heads_class("tasks.model:MultitaskBert") is MultitaskBert  # its module before tasks/domain/
    assert _heads_class("tasks.domain.model:MultitaskBert") is MultitaskBert and _heads_class("nowhere:X") is None


def test_a_folder_that_names_no_class_for_its_heads_tours_the_encoder_with_a_note(fine_tuned):
    folder, _ = fine_tuned  # as folders saved before the heads block named its class
    config = json.loads((folder / "config.json").read_text())
    del config["minibert_heads"]["class"]
    (folder / "config.json").write_text(json.dumps(config))
    _, text = run(model=str(folder), sentences=[A, B], out=None)
    assert text.startswith("note: ") and "names none: re-save it" in text and "Task heads" not in text


def test_fine_tuned_folder_prints_each_heads_prediction(fine_tuned, monkeypatch):
    from tasks.domain.model import MultitaskBert
    folder, multitask = fine_tuned
    monkeypatch.setattr(MultitaskBert, "from_pretrained", classmethod(lambda cls, path: multitask), raising=False)
    _, text = run(model=str(folder), sentences=[A, B], out=None)
    tok = Tokenizer.from_pretrained(folder)
    with torch.no_grad():
        classes = multitask.sentiment_logits(tok([A, B])).argmax(-1).tolist()
    for c, sentence in zip(classes, (A, B)):
        assert f"sentiment    class {c} {'abcde'[c]} " in text and repr(sentence) in text
    assert re.search(r"paraphrase   probability 0\.\d{3}", text)
    assert re.search(r"similarity   -?\d\.\d\d on the 0-5", text)


def test_a_folder_saved_by_MultitaskBert_save_pretrained_tours_with_its_heads(tiny_checkpoint, tmp_path):
    from tasks.domain.model import MultitaskBert
    if not hasattr(MultitaskBert, "save_pretrained"):
        pytest.skip("tasks.domain.model.MultitaskBert.save_pretrained is not there yet")
    multitask = MultitaskBert(BertModel.from_pretrained(tiny_checkpoint), tasks=("sst", "para", "sts")).eval()
    multitask.save_pretrained(tmp_path / "saved", tokenizer=Tokenizer.from_pretrained(tiny_checkpoint))
    _, text = run(model=str(tmp_path / "saved"), sentences=[A, B], out=None)
    assert "note:" not in text and "Task heads of the fine-tuned model" in text and "paraphrase   probability" in text
    assert re.search(r"sentiment    class \d (very negative|negative|neutral|positive|very positive) ", text)
