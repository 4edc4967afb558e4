"""R-Drop (tasks/techniques/rdrop.py): the symmetric KL / MSE consistency per output kind, the total loss, the
two dropout passes in training, and its conflicts, refused when parsing."""
import argparse

import pytest
import torch
import torch.nn.functional as F

from _tiny_multitask import tiny_multitask as _model, tiny_processor as _processor
from tasks.domain.losses import rdrop_consistency, similarity_loss, symmetric_kl
from tasks.techniques.adversarial import adversarial_processors
from tasks.techniques.rdrop import rdrop_loss, RDropProcessor


def _kl(p, q):
    return (p * (p / q).log()).sum(-1)


def test_symmetric_kl_is_half_the_two_kls():
    l1, l2 = torch.randn(6, 5), torch.randn(6, 5)
    p, q = l1.softmax(-1), l2.softmax(-1)
    expected = (0.5 * (_kl(p, q) + _kl(q, p))).mean()
    assert float(symmetric_kl(l1, l2)) == pytest.approx(float(expected), rel=1e-5)
    torch_kl = F.kl_div(l2.log_softmax(-1), p, reduction="batchmean")  # KL(p‖q) as torch computes it
    assert float(_kl(p, q).mean()) == pytest.approx(float(torch_kl), rel=1e-5)
    assert float(symmetric_kl(l1, l1)) == pytest.approx(0.0, abs=1e-7)


def test_rdrop_consistency_per_output_kind():
    z1, z2 = torch.randn(6, 2), torch.randn(6, 2)  # two paraphrase heads' logits
    p, q = torch.sigmoid(z1), torch.sigmoid(z2)
    bern = lambda x, y: x * (x / y).log() + (1 - x) * ((1 - x) / (1 - y)).log()  # noqa: E731
    expected = (0.5 * (bern(p, q) + bern(q, p))).mean()
    assert float(rdrop_consistency(z1, z2, "bernoulli")) == pytest.approx(float(expected), rel=1e-5)
    s1, s2 = torch.rand(6), torch.rand(6)
    assert float(rdrop_consistency(s1, s2, "regression")) == pytest.approx(float(((s1 - s2) ** 2).mean()), rel=1e-6)
    l1, l2 = torch.randn(3, 5), torch.randn(3, 5)
    assert torch.equal(rdrop_consistency(l1, l2, "categorical"), symmetric_kl(l1, l2))
    with pytest.raises(ValueError):
        rdrop_consistency(l1, l2, "ordinal")


def test_rdrop_total_is_the_mean_task_loss_plus_alpha_times_the_consistency():
    assert float(rdrop_loss(torch.tensor(1.0), torch.tensor(3.0), torch.tensor(0.5), 4.0)) == pytest.approx(4.0)


@pytest.mark.parametrize("task,heads", [("sst", {}), ("para", {"para_head": "cross+siamese"}), ("sts", {})])
def test_rdrop_loss_is_the_formula_over_two_dropout_passes(tiny_checkpoint, tiny_data, task, heads):
    model = _model(tiny_checkpoint, (task,), encoder_dropout=0.1, dropout=0.3, **heads)
    base = _processor(model, tiny_data, task)
    rdrop = RDropProcessor(base, alpha=0.6)
    batch = next(base.batches(0))
    torch.manual_seed(5)
    loss = rdrop.loss(model, batch)
    torch.manual_seed(5)
    out_1, out_2 = base.train_outputs(model, batch), base.train_outputs(model, batch)
    assert not torch.equal(out_1, out_2)  # two dropout masks
    kind = {"sst": "categorical", "para": "bernoulli", "sts": "regression"}[task]
    expected = 0.5 * (base.loss_from_outputs(out_1, batch) + base.loss_from_outputs(out_2, batch)) \
        + 0.6 * rdrop_consistency(out_1, out_2, kind)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    loss.backward()
    assert model.bert.embeddings.word.weight.grad is not None


def test_split_task_losses_equal_the_one_piece_losses(tiny_checkpoint, tiny_data):
    """The default run's losses, now loss_from_outputs(train_outputs), are the same expressions as before."""
    model = _model(tiny_checkpoint, para_head="cross+siamese")
    old = {"sst": lambda b: F.cross_entropy(model.sentiment_logits(b), b["labels"]),
           "para": lambda b: F.binary_cross_entropy_with_logits(
               model.paraphrase_head_logits(b), b["labels"].float()[:, None].expand(-1, 2)),
           "sts": lambda b: similarity_loss(model.similarity_scores(b).float(), b["labels"].float() / 5.0)}
    for task, formula in old.items():
        proc = _processor(model, tiny_data, task)
        batch = next(proc.batches(0))
        assert torch.equal(proc.loss(model, batch), formula(batch)), task


def test_rdrop_refuses_to_stack_on_adversarial_training(tiny_checkpoint, tiny_data):
    model = _model(tiny_checkpoint, ("sst",))
    args = argparse.Namespace(adversarial=True, adv_epsilon=1.0, adv_lambda=0.5, adv_temperature=0.05,
                              adv_projection_dim=8, option="finetune")
    cat = adversarial_processors(args, model, {"sst": _processor(model, tiny_data, "sst")})
    cat["sst"].base.loss_weight = 3.0
    assert cat["sst"].loss_weight == 3.0  # CAT now keeps the task's loss weight
    with pytest.raises(ValueError, match="adversarial"):
        RDropProcessor(cat["sst"], 1.0)


@pytest.mark.parametrize("flags, message", [(["--rdrop_alpha", "1", "--adversarial"], "does not combine with --adversarial"),
                                            (["--rdrop_alpha", "-1"], "must be >= 0")])
def test_rdrop_conflicts_are_refused_when_parsing_before_any_phase(flags, message, capsys):
    from tasks import classifier, multitask
    for cli in (classifier, multitask):
        with pytest.raises(SystemExit):
            cli.parse_args(flags + ["--phases", "dae,finetune"])
        assert message in capsys.readouterr().err
