"""The loader and writer: key table, the variations of real checkpoints, and clear errors for bad ones."""
import json

import pytest
import torch

from conftest import RANDOM_CONFIGS, hf_bert_config
from minibert import BertConfig, BertModel, CheckpointError, CheckpointNotFoundError, KEY_TABLE, tiny_config
from minibert.checkpoint import hf_to_minibert, minibert_to_hf

transformers = pytest.importorskip("transformers")


@pytest.fixture
def hf_folder(tmp_path):
    cfg = hf_bert_config(**RANDOM_CONFIGS["tiny"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertModel(cfg)
    model.save_pretrained(tmp_path)
    return tmp_path, model


def _write(folder, state, config):
    from safetensors.torch import save_file
    folder.mkdir(parents=True, exist_ok=True)
    config.to_json_file(folder / "config.json")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))


def test_key_table_covers_every_parameter_both_ways():
    model = BertModel(tiny_config())
    hf = minibert_to_hf(model.state_dict())
    reference = transformers.BertModel(hf_bert_config(**RANDOM_CONFIGS["tiny"]))
    assert set(hf) == set(reference.state_dict()) - {"embeddings.position_ids", "embeddings.token_type_ids"}
    back, unexpected = hf_to_minibert(hf)
    assert unexpected == [] and set(back) == set(model.state_dict())
    assert len(KEY_TABLE) == 16


def test_old_gamma_beta_names_and_bert_prefix_and_buffers(tmp_path, hf_folder):
    folder, hf = hf_folder
    old = {}
    for key, value in hf.state_dict().items():
        key = "bert." + key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        old[key] = value
    old["bert.embeddings.position_ids"] = torch.arange(64)[None]
    old["cls.seq_relationship.weight"] = torch.zeros(2, 32)  # a known head: dropped silently
    _write(tmp_path / "old", old, hf.config)
    ours = BertModel.from_pretrained(tmp_path / "old")
    assert torch.equal(ours.embeddings.norm.weight, hf.embeddings.LayerNorm.weight)
    assert torch.equal(ours.layers[1].ffn_norm.bias, hf.encoder.layer[1].output.LayerNorm.bias)


def test_missing_unexpected_and_misshaped_keys_are_listed_together(tmp_path, hf_folder):
    _, hf = hf_folder
    state = dict(hf.state_dict())
    del state["encoder.layer.1.attention.self.key.weight"]
    state["encoder.layer.0.mystery.weight"] = torch.zeros(3)
    state["pooler.dense.weight"] = torch.zeros(5, 5)
    _write(tmp_path / "bad", state, hf.config)
    with pytest.raises(CheckpointError) as err:
        BertModel.from_pretrained(tmp_path / "bad")
    message = str(err.value)
    assert "missing keys (1): layers.1.attn.key.weight" in message
    assert "unexpected keys (1): encoder.layer.0.mystery.weight" in message
    assert "mis-shaped keys (1): pooler.dense.weight: checkpoint (5, 5) vs model (32, 32)" in message
    assert str(tmp_path / "bad") in message


def test_missing_folder_and_missing_weights(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        BertModel.from_pretrained(str(tmp_path / "nowhere" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="no config.json"):
        BertModel.from_pretrained(tmp_path / "empty")
    tiny_config().to_json_file(tmp_path / "empty" / "config.json")
    with pytest.raises(CheckpointNotFoundError, match="no weights file"):
        BertModel.from_pretrained(tmp_path / "empty")


@pytest.mark.parametrize("fname", ["model.safetensors", "pytorch_model.bin"])
def test_corrupt_weights_file(tmp_path, fname):
    tiny_config().to_json_file(tmp_path / "config.json")
    (tmp_path / fname).write_bytes(b"\x00garbage, not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=f"Could not read weights from .*{fname}"):
        BertModel.from_pretrained(tmp_path)


def test_pickled_code_is_refused(tmp_path):
    """pytorch_model.bin is read with weights_only=True: a pickle that would run code is an error, not code run."""
    tiny_config().to_json_file(tmp_path / "config.json")
    torch.save({"x": print}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        BertModel.from_pretrained(tmp_path)


def test_unknown_hub_id_offline_fails_fast_and_names_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointNotFoundError) as err:
        BertModel.from_pretrained("no-such-org/bert-that-does-not-exist")
    assert "no-such-org/bert-that-does-not-exist" in str(err.value)
    assert "local folder" in str(err.value)


def test_save_pretrained_round_trips_through_transformers(tmp_path):
    torch.manual_seed(3)
    ours = BertModel(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).eval()
    ours.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "bert"
    ref = transformers.BertModel.from_pretrained(tmp_path).eval()
    again = BertModel.from_pretrained(tmp_path)
    ids = torch.randint(1, 99, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    with torch.no_grad():
        a, b, c = ours(ids, mask), ref(ids, attention_mask=mask), again(ids, mask)
    assert (a.last_hidden_state - b.last_hidden_state).abs().max().item() <= 1e-5
    assert (a.pooler_output - b.pooler_output).abs().max().item() <= 1e-5
    assert torch.equal(a.last_hidden_state, c.last_hidden_state)


def test_config_overrides_and_validation(tmp_path, hf_folder):
    folder, _ = hf_folder
    model = BertModel.from_pretrained(folder, hidden_dropout_prob=0.3, attn_implementation="manual")
    assert model.config.hidden_dropout_prob == 0.3 and model.layers[0].attn.manual
    with pytest.raises(ValueError, match="divisible"):
        BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="num_hidden_layers must be a positive integer"):
        BertConfig(num_hidden_layers=0)
    with pytest.raises(ValueError, match="hidden_dropout_prob"):
        BertConfig(hidden_dropout_prob=1.5)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        BertConfig.from_json_file(tmp_path / "bad.json")
    (tmp_path / "roberta.json").write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(ValueError, match="roberta"):
        BertConfig.from_json_file(tmp_path / "roberta.json")


def test_config_reads_hf_json_ignoring_unknown_keys(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": 64, "num_attention_heads": 8,
        "num_hidden_layers": 3, "intermediate_size": 128, "vocab_size": 500, "torch_dtype": "float32",
        "transformers_version": "4.8.2", "use_cache": True}))
    cfg = BertConfig.from_json_file(tmp_path / "config.json")
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.head_size, cfg.vocab_size) == (64, 8, 8, 500)
    with pytest.raises(Exception):
        cfg.hidden_size = 3  # frozen
    assert BertConfig.from_dict(cfg.to_dict()) == cfg


def test_output_reads_as_attributes_keys_and_tuple():
    model = BertModel(tiny_config()).eval()
    out = model(torch.randint(0, 99, (2, 5)), output_hidden_states=True)
    assert out["last_hidden_state"] is out.last_hidden_state is out[0]
    assert out["pooler_output"].shape == (2, 32)
    assert list(out.keys()) == ["last_hidden_state", "pooler_output", "hidden_states"]
    assert len(out.hidden_states) == 3
    with pytest.raises(KeyError):
        out["attentions"]  # not requested


def test_gradient_checkpointing_gives_equal_gradients():
    torch.manual_seed(0)
    plain = BertModel(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).train()
    ckpt = BertModel(plain.config.replace(gradient_checkpointing=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    ids = torch.randint(1, 99, (3, 8))
    for model in (plain, ckpt):
        out = model(ids)
        (out.last_hidden_state.pow(2).sum() + out.pooler_output.sum()).backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-5), name


def test_gradient_checkpointing_recomputes_the_same_dropout_masks():
    plain = BertModel(tiny_config(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)).train()
    ckpt = BertModel(plain.config.replace(gradient_checkpointing=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    ids = torch.randint(1, 99, (3, 8))
    for model in (plain, ckpt):
        torch.manual_seed(1)  # the same masks in both forwards; the recomputation must draw them again
        out = model(ids)
        (out.last_hidden_state.pow(2).sum() + out.pooler_output.sum()).backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-5), name


def test_inputs_embeds_replace_the_word_lookup():
    model = BertModel(tiny_config()).eval()
    ids = torch.randint(1, 99, (2, 6))
    with torch.no_grad():
        a = model(ids).last_hidden_state
        b = model(ids, inputs_embeds=model.embeddings.word(ids)).last_hidden_state
    assert torch.equal(a, b)


def test_sequence_longer_than_positions_is_a_clear_error():
    model = BertModel(tiny_config())
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_hub_id_without_connection_fails_without_retrying(monkeypatch):
    import minibert.hub as hub
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(CheckpointNotFoundError, match="'bert-base-uncased'.*no connection"):
        BertModel.from_pretrained("bert-base-uncased")


def test_hub_id_downloads_config_and_weights(monkeypatch, hf_folder):
    """The hub path, with huggingface_hub's downloader replaced by a local 'snapshot' folder."""
    import huggingface_hub
    import minibert.hub as hub
    folder, hf = hf_folder
    asked = []

    def fake_download(repo_id, filename, local_files_only=False, **kwargs):
        asked.append((repo_id, filename, local_files_only))
        if local_files_only or not (folder / filename).exists():
            raise FileNotFoundError(filename)
        return str(folder / filename)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = BertModel.from_pretrained("some-org/tiny-bert")
    assert torch.equal(model.embeddings.word.weight, hf.embeddings.word_embeddings.weight)
    assert ("some-org/tiny-bert", "model.safetensors", False) in asked
