"""Shared fixtures: tiny random BERT configs, HF reference models built from the same weights."""
import gc
import logging
import os

import pytest
import torch
import tqdm

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny tensors: one intra-op thread is fastest, and does not spin against other work on a shared CPU (two
# threads spinning against a busy core: the suite took 425 s of CPU beside a training run, 181 s with one
# thread). The CLI tests' subprocesses too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
# No tqdm monitor thread: the test process stays single-threaded, so tests may fork it (tests/_forked.py).
tqdm.tqdm.monitor_interval = 0

# Several shapes, so that parity is not an accident of one config.
RANDOM_CONFIGS = {
    "tiny": dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37),
    "wide-heads": dict(vocab_size=211, hidden_size=48, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64),
    "one-layer": dict(vocab_size=50, hidden_size=24, num_hidden_layers=1, num_attention_heads=6, intermediate_size=96,
                      type_vocab_size=3, layer_norm_eps=1e-5),
}


def pytest_collection_finish(session):
    """Everything imported so far (torch, transformers, scipy, every test module) lives for the whole suite:
    out of the collector's sight, a full gc.collect() (tasks/ablate.py runs one per cell) walks only what the
    tests made since, not millions of long-lived objects."""
    gc.collect()
    gc.freeze()


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


# ---- a tiny random BERT with a letter-level vocabulary, and tiny CS224N-format data -------------------------

TINY_WORDS = ["good", "bad", "great", "awful", "movie", "film", "the", "a", "is", "was", "how", "what", "why",
              "do", "i", "you", "learn", "cook", "play", "dog", "cat", "runs", "sits", "on", "grass", "mat"]


def write_tiny_checkpoint(folder, **config):
    """config.json + model.safetensors + vocab.txt: special tokens, letters, ##letters and a few words."""
    from minibert import BertModel, tiny_config
    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,?!'-\"")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + ["##" + c for c in letters] + TINY_WORDS
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    BertModel(tiny_config(vocab_size=len(vocab), **config)).save_pretrained(folder)
    return folder


def write_tiny_data(folder, n=32, seed=0):
    """All twelve CS224N files with n synthetic rows each (labels follow simple word rules)."""
    import random
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def sentence():
        return " ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(3, 9)))

    def write(name, header, rows):
        with open(folder / name, "w", encoding="utf-8") as f:
            f.write("\t" + "\t".join(header) + "\n")
            for i, row in enumerate(rows):
                f.write("\t".join([str(i)] + [str(x) for x in row]) + "\n")

    for prefix, classes in (("ids-sst", 5), ("ids-cfimdb", 2)):
        for split in ("train", "dev"):
            rows = []
            for i in range(n):
                s = sentence()
                rows.append((f"{prefix}-{split}-{i:04d}", s, (s.count("good") + 2 * s.count("great")) % classes))
            write(f"{prefix}-{split}.csv", ["id", "sentence", "sentiment"], rows)
        write(f"{prefix}-test-student.csv", ["id", "sentence"], [(f"{prefix}-test-{i:04d}", sentence()) for i in range(n)])
    for prefix, label in (("quora", lambda a, b: float(a.split()[0] == b.split()[0])),
                          ("sts", lambda a, b: round(5.0 * len(set(a.split()) & set(b.split())) / len(set(a.split()) | set(b.split())), 1))):
        col = "is_duplicate" if prefix == "quora" else "similarity"
        for split in ("train", "dev"):
            rows = []
            for i in range(n):
                a, b = sentence(), sentence()
                rows.append((f"{prefix}-{split}-{i:04d}", a, b, label(a, b)))
            write(f"{prefix}-{split}.csv", ["id", "sentence1", "sentence2", col], rows)
        write(f"{prefix}-test-student.csv", ["id", "sentence1", "sentence2"],
              [(f"{prefix}-test-{i:04d}", sentence(), sentence()) for i in range(n)])
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture
def load_logged(caplog):
    """Run a loader: (examples, the notices it logged), tasks.domain.data's warnings as the CLIs print them."""
    def load(loader, path, **kw):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tasks.domain.data"):
            examples = loader(path, **kw)
        return examples, [r.getMessage() for r in caplog.records if r.name == "tasks.domain.data"]
    return load
