"""The frozen-encoder GAN mode and G's own optimiser: the same numbers as the fine-tuned path with a frozen
encoder, the batches it draws, and G's settings."""
import json

import pytest
import torch

from gan.frozen import FrozenBatches, FrozenConfig, Stream, embed_examples, run_cell, train_frozen
from gan.model import EmbeddingGan, GanBert, GanConfig
from gan.players import generator_optimizer
from gan.probe import fit_reference
from gan.trainer import GanTrainer
from test_gan import _FixedBatch  # noqa: E402  (tests/ is on the path)
from minibert import BertModel, Tokenizer, tiny_config
from tasks.domain.data import SentenceExample
from tasks.engine import TrainConfig


# ---- G's optimiser ----------------------------------------------------------------------------------------------
def test_gan_config_checks_gs_optimiser_fields():
    assert (GanConfig().g_lr, GanConfig().g_beta1, GanConfig().g_schedule) == (1e-4, 0.5, "constant")
    with pytest.raises(ValueError, match="g_beta1"):
        GanConfig(g_beta1=1.0)
    with pytest.raises(ValueError, match="g_schedule"):
        GanConfig(g_schedule="cosine-restarts")


@pytest.mark.parametrize("schedule,last_lr", [("constant", 2e-4), ("linear", 0.0)])
def test_generator_optimizer_reads_g_lr_g_beta1_and_g_schedule(schedule, last_lr):
    g = torch.nn.Linear(3, 4)
    opt, sched = generator_optimizer(g, GanConfig(g_lr=2e-4, g_beta1=0.5, g_schedule=schedule), 5e-5, 0.01, 0, 10)
    assert {grp["betas"] for grp in opt.param_groups} == {(0.5, 0.999)}
    assert [grp["lr"] for grp in opt.param_groups] == [2e-4, 2e-4]
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(last_lr)
    fallback, _ = generator_optimizer(g, GanConfig(g_lr=None), 5e-5, 0.01, 0, 10)
    assert fallback.param_groups[0]["lr"] == 5e-5  # g_lr None: D's rate


# ---- the frozen mode equals the fine-tuned path with a frozen encoder -----------------------------------------


def _fixed_noise(model):
    """Both models draw the same z and fake labels, whatever else consumed the global random numbers."""
    generate = model.generate
    model.generate = lambda n, labels=None, device=None, rng=None: generate(n, labels, device, torch.Generator().manual_seed(7))
    return model


def _pair(method):
    """A GanBert with a frozen tiny encoder, and an EmbeddingGan holding the same D and G."""
    torch.manual_seed(0)
    encoder = BertModel(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    gan = GanConfig(method=method, noise_dim=6, gan_dropout=0.0, d_hidden=16, g_hidden=16, g_lr=1e-3, g_beta1=0.9)
    full = GanBert(encoder, 3, gan)
    for p in full.encoder.parameters():
        p.requires_grad = False
    frozen = EmbeddingGan(full.hidden_size, 3, gan)
    frozen.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("encoder.")})
    ids = torch.randint(5, 99, (4, 6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 2, -100, -100]),
             "label_mask": torch.tensor([True, True, False, False])}
    with torch.no_grad():
        vectors = full.embed_batch(batch)  # what the frozen mode caches
    return _fixed_noise(full), _fixed_noise(frozen), batch, {**batch, "embeddings": vectors}


@pytest.mark.parametrize("method", ["plain", "ganbert", "acganbert"])
def test_frozen_mode_gives_the_fine_tuned_paths_losses_and_step(method, tmp_path):
    full, frozen, batch, cached = _pair(method)
    a, b = full.losses(batch), frozen.losses(cached)
    assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), (a, b)

    # one step of the loop: on the fine-tuned path (encoder frozen) and on the cached embeddings
    cfg = TrainConfig(epochs=1, lr=1e-3, schedule="constant", warmup_ratio=0.0, out_dir=str(tmp_path / "full"))
    GanTrainer(full, {"t": _FixedBatch(batch)}, cfg, evaluate=lambda m: {"score": 0.0}, show_progress=False).fit()
    cfg = TrainConfig(epochs=1, lr=1e-3, schedule="constant", warmup_ratio=0.0, out_dir=str(tmp_path / "frozen"))
    GanTrainer(frozen, {"t": _FixedBatch(cached)}, cfg, evaluate=lambda m: {"score": 0.0}, show_progress=False).fit()
    moved = full.state_dict()
    for name, value in frozen.state_dict().items():
        assert torch.allclose(moved[name], value, atol=1e-6), name
    start = _pair(method)[0].state_dict()
    assert all(not torch.allclose(moved[k], start[k]) for k in ("discriminator.out.weight", "generator.out.weight")
               if k in start)  # both players did step


def test_embed_examples_keeps_the_input_order(tiny_checkpoint):
    model = GanBert(BertModel.from_pretrained(tiny_checkpoint), 5)
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    rows = [SentenceExample(str(i), s) for i, s in enumerate(["a good film", "bad", "the cat sits on the mat", "great"])]
    vectors = embed_examples(model.encoder.train(), rows, tok, batch_size=3)  # two batches, sorted by length
    assert model.encoder.training  # left as it was
    model.eval()
    for row, v in zip(rows, vectors):
        one = tok([row.sentence])
        assert torch.allclose(model.embed_batch(one)[0], v, atol=1e-5)


# ---- batches and training on embeddings ------------------------------------------------------------------------
def test_stream_draws_whole_shuffled_passes():
    s = Stream(torch.arange(5), seed=3)
    first, second = s.take(5), s.take(5)
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(5)) and not torch.equal(first, second)
    assert len(s.take(12)) == 12
    assert torch.equal(Stream(torch.arange(5), 3).take(15), torch.cat([first, second, Stream(torch.arange(5), 3).take(15)[10:]]))


def _gaussians(n, seed):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(3, 8, generator=torch.Generator().manual_seed(0)) * 3
    y = torch.arange(3).repeat_interleave(n // 3)
    return means[y] + torch.randn(len(y), 8, generator=g), y


def test_train_frozen_learns_label_carrying_fakes_on_a_toy_problem():
    x, y = _gaussians(600, 1)
    labeled, unlabeled = torch.arange(0, 600, 10), torch.tensor([i for i in range(600) if i % 10])
    ref = fit_reference(x, y, 3, knn_points=300)
    torch.manual_seed(0)
    model = EmbeddingGan(8, 3, GanConfig(method="acganbert", noise_dim=8, g_hidden=32, d_hidden=32, gan_dropout=0.0,
                                         g_lr=1e-3))
    from gan.probe import fake_probe
    history = train_frozen(model, x, y, labeled, unlabeled, FrozenConfig(steps=400, lr=2e-3, eval_every=200), seed=1,
                           evaluate=lambda m: fake_probe(m, x, y, reference=ref))
    assert [h["step"] for h in history] == [200, 400] and {"d", "g", "aux"} <= set(history[-1]["train_loss"])
    assert history[-1]["probe_acc"] > 0.9 and history[-1]["centroid_acc"] > 0.9, history[-1]


def test_every_method_sees_the_same_labelled_rows(monkeypatch):
    """The labelled part of each batch depends on the seed only: not on the method or the unlabelled pool."""
    seen = {}
    x, y = _gaussians(90, 2)
    for method, unlabeled in (("plain", []), ("ganbert", list(range(30, 90))), ("acganbert", list(range(30, 60)))):
        model = EmbeddingGan(8, 3, GanConfig(method=method, noise_dim=4))
        batches = []
        batches = list(FrozenBatches(x, y, torch.arange(30), torch.tensor(unlabeled, dtype=torch.long),
                                     FrozenConfig(steps=5, labeled_per_batch=8, unlabeled_per_batch=4), seed=1,
                                     use_unlabeled=model.generator is not None).batches(0))
        seen[method] = [b["embeddings"][b["label_mask"]] for b in batches]
        assert all(b["label_mask"].sum() == 8 and len(b["labels"]) == (8 if method == "plain" else 12) for b in batches)
    assert all(torch.equal(a, b) for a, b in zip(seen["plain"], seen["acganbert"]))
    assert all(torch.equal(a, b) for a, b in zip(seen["plain"], seen["ganbert"]))


def test_run_cell_writes_a_record_per_evaluation_and_the_result(tmp_path):
    x, y = _gaussians(300, 3)
    dev_x, dev_y = _gaussians(60, 4)
    data = {"train": x, "train_labels": y, "dev": dev_x, "dev_labels": dev_y}
    ref = fit_reference(x, y, 3, knn_points=150)
    result = run_cell(data, 3, GanConfig(method="acganbert", noise_dim=4), FrozenConfig(steps=20, eval_every=10), 0.1, 0.5,
                      seed=1, reference=ref, out_dir=tmp_path)
    assert result["labeled"] == 30 and result["unlabeled"] == 135 and 0 <= result["dev_accuracy"] <= 1
    assert 0 <= result["probe_acc"] <= 1 and "coverage" in result
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("step") for r in records[:2]] == [10, 20] and "fakes" in records[0] and records[-1]["final"]
