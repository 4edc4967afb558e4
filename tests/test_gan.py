"""GAN-BERT / AC-GAN-BERT: loss terms by hand, shapes, gradient isolation, a toy problem, data split, probe."""
import math

import numpy as np
import pytest
import torch

from gan import (EmbeddingGan, GanBert, GanConfig, GanTrainer, MaskedSentenceCollator, auxiliary_class_loss,
                 discriminator_fake_loss, discriminator_real_loss, fake_log_probs, feature_matching_loss,
                 fit_linear_probe, gan_losses, generator_adversarial_loss, labeled_split, pca, replication_factor,
                 spread_ratio, supervised_loss, unlabeled_subset)
from gan.players import player_grads
from minibert import BertModel, tiny_config
from tasks.domain.data import SentenceExample
from tasks.engine import TrainConfig


# ---- the loss terms against hand-computed values --------------------------------------------------------------
# rows of (k + 1) = 3 logits: [0, 0, ln 2] has p_fake = 2 / 4 = 1/2; [0, 0, 0] has p_fake = 1/3
LOGITS = torch.tensor([[0.0, 0.0, math.log(2.0)], [0.0, 0.0, 0.0]])


def test_fake_log_probs_by_hand():
    log_p, log_not = fake_log_probs(LOGITS)
    assert torch.allclose(log_p, torch.tensor([math.log(1 / 2), math.log(1 / 3)]))
    assert torch.allclose(log_not, torch.tensor([math.log(1 / 2), math.log(2 / 3)]))


def test_real_fake_and_generator_terms_by_hand():
    assert discriminator_real_loss(LOGITS).item() == pytest.approx(-(math.log(1 / 2) + math.log(2 / 3)) / 2)
    assert discriminator_fake_loss(LOGITS).item() == pytest.approx(-(math.log(1 / 2) + math.log(1 / 3)) / 2)
    assert generator_adversarial_loss(LOGITS).item() == pytest.approx(-(math.log(1 / 2) + math.log(2 / 3)) / 2)


def test_terms_match_gan_berts_reference_formulas_with_epsilon():
    """The reference computes -mean(log(1 - p_fake + ε)) etc. from softmax probabilities; ours is its ε → 0 limit."""
    logits = torch.randn(16, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    p_fake = torch.softmax(logits, -1)[:, -1]
    for eps, tol in ((0.0, 1e-6), (1e-8, 1e-4)):
        assert discriminator_real_loss(logits).item() == pytest.approx(-torch.log(1 - p_fake + eps).mean().item(), abs=tol)
        assert discriminator_fake_loss(logits).item() == pytest.approx(-torch.log(p_fake + eps).mean().item(), abs=tol)
        assert generator_adversarial_loss(logits).item() == pytest.approx(-torch.log(1 - p_fake + eps).mean().item(), abs=tol)
    extreme = torch.tensor([[0.0, 0.0, 200.0]])  # p_fake = 1 in float: the stable form still gives the exact value
    assert discriminator_real_loss(extreme).item() == pytest.approx(200.0 - math.log(2.0), rel=1e-6)


def test_supervised_loss_uses_the_k_class_logits_of_labelled_rows_only():
    logits = torch.tensor([[2.0, 0.0, 5.0], [0.0, 9.0, 0.0]], requires_grad=True)
    labels, mask = torch.tensor([0, -100]), torch.tensor([True, False])
    loss = supervised_loss(logits, labels, mask)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2.0)))  # softmax over [2, 0], the fake logit left out
    loss.backward()
    assert torch.all(logits.grad[1] == 0) and logits.grad[0, 2] == 0
    none = supervised_loss(logits, labels, torch.tensor([False, False]))
    assert none.item() == 0.0 and none.requires_grad


def test_feature_matching_and_auxiliary_terms_by_hand():
    real, fake = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    assert feature_matching_loss(real, fake).item() == pytest.approx((1.0 ** 2 + 2.0 ** 2) / 2)  # means [2,3] vs [1,1]
    fake_logits = torch.tensor([[1.0, 0.0, 9.0]])
    assert auxiliary_class_loss(fake_logits, torch.tensor([0])).item() == pytest.approx(math.log(1 + math.exp(-1.0)))


@pytest.mark.parametrize("variant", ["plain", "ganbert", "acganbert"])
def test_gan_losses_totals_are_the_papers_sums(variant):
    g = torch.Generator().manual_seed(1)
    rf, rl, ff, fl = torch.randn(4, 5, generator=g), torch.randn(4, 3, generator=g), torch.randn(4, 5, generator=g), torch.randn(4, 3, generator=g)
    labels, mask, fake_labels = torch.tensor([0, 1, -100, 1]), torch.tensor([True, True, False, True]), torch.tensor([1, 0, 0, 1])
    t = gan_losses(rf, rl, labels, mask, ff, fl, fake_labels, variant=variant, aux_weight=0.5, feature_matching_weight=2.0)
    sup = supervised_loss(rl, labels, mask)
    if variant == "plain":
        assert set(t) == {"d_sup", "d"} and torch.equal(t["d"], sup)
        return
    d = sup + discriminator_real_loss(rl) + discriminator_fake_loss(fl)
    g_ = generator_adversarial_loss(fl) + 2.0 * feature_matching_loss(rf, ff)
    if variant == "acganbert":
        aux = auxiliary_class_loss(fl, fake_labels)
        d, g_ = d + 0.5 * aux, g_ + 0.5 * aux
    assert t["d"].item() == pytest.approx(d.item()) and t["g"].item() == pytest.approx(g_.item())


def test_bad_configuration_errors_name_the_argument():
    with pytest.raises(ValueError, match="method"):
        GanConfig(method="wgan")
    with pytest.raises(ValueError, match="variant"):
        gan_losses(torch.zeros(1, 2), torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.bool),
                   variant="gan")
    with pytest.raises(ValueError, match="gan_dropout"):
        GanConfig(gan_dropout=1.0)


# ---- shapes -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hidden,k", [(8, 2), (24, 5), (384, 3)])
@pytest.mark.parametrize("method", ["plain", "ganbert", "acganbert"])
def test_shapes_for_any_hidden_size_and_k(hidden, k, method):
    model = EmbeddingGan(hidden, k, GanConfig(method=method, noise_dim=7, d_hidden=16))
    x = torch.randn(6, hidden)
    features, logits = model.discriminator(x)
    assert features.shape == (6, 16) and logits.shape == (6, k + 1)
    assert model.sentiment_logits({"embeddings": x}).shape == (6, k)
    batch = {"embeddings": x, "labels": torch.tensor([0, 1, -100, 1, -100, 0]),
             "label_mask": torch.tensor([True, True, False, True, False, True])}
    terms = model.losses(batch)
    assert terms["d"].dim() == 0 and ("g" in terms) == (method != "plain") and ("aux" in terms) == (method == "acganbert")
    if method != "plain":
        fake, labels = model.generate(4)
        assert fake.shape == (4, hidden) and (labels is not None) == (method == "acganbert")
        assert model.generator.out.in_features == hidden  # G's hidden width defaults to the encoder's


@pytest.mark.parametrize("hidden", [32, 48])
def test_gan_bert_reads_the_width_from_the_encoder_config(hidden):
    encoder = BertModel(tiny_config(hidden_size=hidden, num_attention_heads=4))
    model = GanBert(encoder, num_labels=5, config=GanConfig(noise_dim=10))
    ids = torch.randint(5, 99, (3, 7))
    emb = model.embed_batch({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    assert emb.shape == (3, hidden) and model.generate(3)[0].shape == (3, hidden)


# ---- gradient isolation ---------------------------------------------------------------------------------------
class _FixedBatch:
    def __init__(self, batch):
        self.batch = batch

    def num_batches(self):
        return 1

    def batches(self, epoch):
        return iter([self.batch])


def _tiny_gan_bert(method, tmp_path):
    torch.manual_seed(0)
    encoder = BertModel(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    model = GanBert(encoder, 3, GanConfig(method=method, noise_dim=6, gan_dropout=0.0, d_hidden=16, g_hidden=16))
    ids = torch.randint(5, 99, (4, 6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 2, -100, -100]),
             "label_mask": torch.tensor([True, True, False, False])}
    trainer = GanTrainer(model, {"t": _FixedBatch(batch)}, TrainConfig(epochs=1, out_dir=str(tmp_path)),
                         evaluate=lambda m: {"score": 0.0}, show_progress=False)
    return model, trainer, batch


@pytest.mark.parametrize("method", ["ganbert", "acganbert"])
def test_each_loss_reaches_only_its_own_player(method, tmp_path):
    """GanTrainer's step (gan/players.py's player_grads on its two parameter lists) gives D and the encoder
    ∂d/∂(D, encoder) and G ∂g/∂G, each exactly as if the other loss did not exist."""
    model, trainer, batch = _tiny_gan_bert(method, tmp_path)
    encoder, disc, gen = list(model.encoder.parameters()), list(model.discriminator.parameters()), list(model.generator.parameters())
    assert {id(p) for p in trainer.d_params} == {id(p) for p in encoder + disc}
    assert [id(p) for p in trainer.g_params] == [id(p) for p in gen]

    def terms():
        torch.manual_seed(1)  # the same z and fake labels every time
        return model.losses(batch)

    d_alone = torch.autograd.grad(terms()["d"], encoder + disc, allow_unused=True)
    g_alone = torch.autograd.grad(terms()["g"], gen)
    assert all(g is not None and g.abs().sum() > 0 for g in d_alone[len(encoder):])
    assert any(g is not None and g.abs().sum() > 0 for g in d_alone[:len(encoder)])

    t = terms()
    player_grads(t["d"], t["g"], trainer.d_params, trainer.g_params)
    assert all((a is None and p.grad is None) or torch.equal(a, p.grad) for a, p in zip(d_alone, encoder + disc)), \
        "G's loss reached D's or the encoder's gradient"
    assert all(torch.equal(a, p.grad) for a, p in zip(g_alone, gen)), "D's loss reached G's gradient"

    # a negative control: the reference's g_loss.backward(); d_loss.backward() leaks each loss into the other player
    model.zero_grad(set_to_none=True)
    t = terms()
    t["g"].backward(retain_graph=True)
    t["d"].backward()
    assert not all(torch.allclose(a, p.grad) for a, p in zip(g_alone, gen)), "control: D's loss should leak into G"
    assert not all(a is None or torch.allclose(a, p.grad) for a, p in zip(d_alone, encoder + disc)), \
        "control: G's loss should leak into D and the encoder"


def test_each_optimizer_holds_exactly_one_player(tmp_path):
    model, trainer, _ = _tiny_gan_bert("acganbert", tmp_path)
    d_opt, g_opt = trainer.optimizers
    d_ids = {id(p) for g in d_opt.param_groups for p in g["params"]}
    g_ids = {id(p) for g in g_opt.param_groups for p in g["params"]}
    assert g_ids == {id(p) for p in model.generator.parameters()}
    assert d_ids == {id(p) for p in list(model.encoder.parameters()) + list(model.discriminator.parameters())}
    assert {grp["betas"] for grp in g_opt.param_groups} == {(0.5, 0.999)}  # G's own settings (GanConfig)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.fit()  # one step: one batch, one epoch
    moved = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert moved == {"encoder", "discriminator", "generator"}


# ---- the toy problem: three Gaussian classes in 8-D stand in for sentence embeddings ------------------------
class _Gaussians:
    """Each batch: 48 points of 3 classes around fixed means; a fifth of them keep their label."""

    def __init__(self, steps=200, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.means = torch.randn(3, 8, generator=g) * 3
        self.steps = steps

    def sample(self, n, g):
        y = torch.randint(3, (n,), generator=g)
        return self.means[y] + torch.randn(n, 8, generator=g), y

    def num_batches(self):
        return self.steps

    def batches(self, epoch):
        g = torch.Generator().manual_seed(1000 + epoch)
        for _ in range(self.steps):
            x, y = self.sample(48, g)
            mask = torch.rand(48, generator=g) < 0.2
            yield {"embeddings": x, "labels": torch.where(mask, y, -100), "label_mask": mask}


def _train_toy(method, tmp_path, epochs=1, resume=False, fail_at=None):
    torch.manual_seed(0)
    data = _Gaussians()
    model = EmbeddingGan(8, 3, GanConfig(method=method, noise_dim=8, g_hidden=32, d_hidden=32, gan_dropout=0.0, g_lr=2e-3))
    calls = []

    def evaluate(m):
        calls.append(1)
        if fail_at == len(calls):
            raise KeyboardInterrupt
        return {"score": 0.0}

    cfg = TrainConfig(epochs=epochs, lr=2e-3, warmup_ratio=0.0, schedule="constant", weight_decay=0.0,
                      out_dir=str(tmp_path), resume=resume)
    try:
        GanTrainer(model, {"toy": data}, cfg, evaluate, show_progress=False).fit()
    except KeyboardInterrupt:
        pass
    return model.eval(), data


def test_conditional_generator_learns_label_dependent_embeddings(tmp_path):
    """A probe trained on real points reads the conditioning label off AC-GAN-BERT's fakes; GAN-BERT's G,
    which never sees the label, stays at chance: the probe measures conditioning, not mere realism."""
    accuracy = {}
    for method in ("acganbert", "ganbert"):
        model, data = _train_toy(method, tmp_path / method)
        x, y = data.sample(600, torch.Generator().manual_seed(5))
        probe = fit_linear_probe(x, y, 3)
        assert probe.accuracy(x, y) > 0.95
        labels = torch.arange(3).repeat_interleave(100)
        with torch.no_grad():
            fake = model.generate(300, labels)[0]
        accuracy[method] = probe.accuracy(fake, labels)
        real_batch = {"embeddings": x}
        assert (model.sentiment_logits(real_batch).argmax(-1) == y).float().mean() > 0.9  # D classifies real points
    assert accuracy["acganbert"] > 0.9, accuracy  # chance is 1/3
    assert accuracy["ganbert"] < 0.6, accuracy


def test_resume_restores_the_generators_optimizer(tmp_path):
    straight, _ = _train_toy("acganbert", tmp_path / "a", epochs=2)
    _train_toy("acganbert", tmp_path / "b", epochs=2, fail_at=2)  # dies in epoch 2's evaluation
    resumed, _ = _train_toy("acganbert", tmp_path / "b", epochs=2, resume=True)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


# ---- data: the labelled / unlabelled split --------------------------------------------------------------------
def test_labeled_split_is_stratified_nested_and_deterministic():
    labels = [i % 5 for i in range(1000)]
    small, pool_small = labeled_split(labels, 0.01, seed=3)
    big, pool_big = labeled_split(labels, 0.1, seed=3)
    assert len(small) == 10 and sorted(labels[i] for i in small) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert set(small) <= set(big) and len(big) == 100
    assert set(big).isdisjoint(pool_big) and len(big) + len(pool_big) == 1000
    assert (small, pool_small) == labeled_split(labels, 0.01, seed=3) and small != labeled_split(labels, 0.01, seed=4)[0]
    assert len(labeled_split(labels, 0.0001, seed=0)[0]) == 5  # at least one per class
    part = unlabeled_subset(pool_big, 0.5, seed=3)
    assert len(part) == 450 and set(part) <= set(pool_big) and set(unlabeled_subset(pool_big, 0.2, 3)) <= set(part)
    with pytest.raises(ValueError, match="labeled_fraction"):
        labeled_split(labels, 0.0, seed=0)


@pytest.mark.parametrize("labeled,unlabeled,expected", [(85, 8459, 6), (854, 7690, 3), (4272, 4272, 1), (100, 0, 1),
                                                        (1, 7, 3), (1, 6, 2)])
def test_replication_factor_is_gan_berts_rule(labeled, unlabeled, expected):
    """max(1, floor(log2(floor(1 / rate)))): 1% of SST -> 6 copies, 10% -> 3, 50% -> 1."""
    assert replication_factor(labeled, unlabeled) == expected


def test_masked_collator_marks_unlabelled_rows():
    from minibert import Tokenizer
    tok = Tokenizer.from_pretrained()
    batch = MaskedSentenceCollator(tok)([SentenceExample("a", "good film", 3), SentenceExample("b", "bad", None)])
    assert batch["labels"].tolist() == [3, -100] and batch["label_mask"].tolist() == [True, False]
    assert batch["input_ids"].shape[0] == 2 and batch["ids"] == ["a", "b"]


# ---- the probe tools ------------------------------------------------------------------------------------------
def test_pca_finds_the_axis_of_largest_variance_as_numpy_does():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 4, generator=g, dtype=torch.float64) * torch.tensor([0.1, 5.0, 1.0, 0.2], dtype=torch.float64)
    mean, axes = pca(x, 2)
    assert abs(axes[0, 1]) > 0.99 and abs(axes[1, 2]) > 0.99
    centered = (x - x.mean(0)).numpy()
    ref = np.linalg.svd(centered, full_matrices=False)[2][:2]
    assert np.allclose(np.abs(axes.numpy()), np.abs(ref), atol=1e-8)


def test_spread_ratio_is_zero_for_collapsed_fakes_and_one_for_real_like_ones():
    g = torch.Generator().manual_seed(0)
    real, y = torch.randn(400, 6, generator=g), torch.arange(400) % 2
    same = torch.randn(400, 6, generator=g)
    collapsed = torch.zeros(400, 6) + 0.01 * torch.randn(400, 6, generator=g)
    assert spread_ratio(real, y, same, y) == pytest.approx(1.0, abs=0.2)
    assert spread_ratio(real, y, collapsed, y) < 1e-3


def test_layer_lr_decay_reaches_the_encoder_on_the_discriminators_side(tmp_path):
    """--layer_lr_decay applies to the GAN's encoder too (D's side), the discriminator keeps --head_lr."""
    torch.manual_seed(0)
    model = GanBert(BertModel(tiny_config()), 3, GanConfig(method="acganbert", noise_dim=4))
    cfg = TrainConfig(epochs=1, lr=1e-3, head_lr=1e-2, layer_lr_decay=0.5, out_dir=str(tmp_path))
    trainer = GanTrainer(model, {"t": _FixedBatch({})}, cfg, lambda m: {"score": 0.0}, show_progress=False)
    lrs = {id(p): g["lr"] for g in trainer.optimizers[0].param_groups for p in g["params"]}
    layers = len(model.encoder.bert.layers)
    assert lrs[id(model.encoder.bert.layers[-1].ffn.up.weight)] == pytest.approx(1e-3 * 0.5)
    assert lrs[id(model.encoder.bert.embeddings.word.weight)] == pytest.approx(1e-3 * 0.5 ** (layers + 1))
    assert lrs[id(model.discriminator.out.weight)] == pytest.approx(1e-2)
