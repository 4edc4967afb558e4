"""Shared fixtures: tiny random BERT configs, HF reference models built from the same weights."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Several shapes, so that parity is not an accident of one config.
RANDOM_CONFIGS = {
    "tiny": dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37),
    "wide-heads": dict(vocab_size=211, hidden_size=48, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64),
    "one-layer": dict(vocab_size=50, hidden_size=24, num_hidden_layers=1, num_attention_heads=6, intermediate_size=96,
                      type_vocab_size=3, layer_norm_eps=1e-5),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def hf_bert_config(**values):
    """A transformers.BertConfig with dropout on by default; pass 0.0 for deterministic comparisons."""
    transformers = pytest.importorskip("transformers")
    values = {"max_position_embeddings": 64, **values}
    return transformers.BertConfig(**values)



@pytest.fixture(scope="session")
def real_sentences():
    """64 real SST dev sentences (varied lengths, so batches carry padding)."""
    from _datafiles import read_columns
    return [row[0] for row in read_columns("ids-sst-dev.csv", "sentence", limit=64)]
