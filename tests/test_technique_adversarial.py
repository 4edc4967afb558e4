"""Contrastive adversarial training: the FGM perturbation has norm ε, the embedding matrix is bit-for-bit
untouched, no gradient flows through the perturbation, and the total loss is the paper's, for every head."""
import argparse

import pytest
import torch
import torch.nn.functional as F

from minibert import BertModel, Tokenizer
from tasks.techniques.adversarial import adversarial_processors, fgm_perturbation, perturbed_embeddings
from tasks.domain.losses import info_nce
from tasks.domain.model import MultitaskBert
from tasks.domain.processors import PROCESSORS

ARGS = dict(adversarial=True, adv_epsilon=0.5, adv_lambda=0.3, adv_temperature=0.1, adv_projection_dim=8,
            option="finetune")
FILES = {"sst": "ids-sst", "para": "quora", "sts": "sts"}


def _setup(tiny_checkpoint, tiny_data, task="sst", **model_kw):
    torch.manual_seed(0)
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    encoder = BertModel.from_pretrained(tiny_checkpoint, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = MultitaskBert(encoder, (task,), dropout=0.0, **model_kw)
    extra = {"form": model_kw.get("para_head", "cross")} if task == "para" else {}
    proc = PROCESSORS[task].from_files(task, tok, train=tiny_data / f"{FILES[task]}-train.csv", max_examples=8,
                                       batch_size=8, **extra)
    wrapped = adversarial_processors(argparse.Namespace(**ARGS), model, {task: proc})[task]
    return model, proc, wrapped, next(proc.batches(0))


def test_fgm_perturbation_has_norm_epsilon_along_the_gradient():
    g = torch.randn(30, 4)
    r = fgm_perturbation(g, 0.7)
    assert float(r.norm()) == pytest.approx(0.7, rel=1e-6)
    assert torch.allclose(r / r.norm(), g / g.norm(), atol=1e-7)
    assert torch.equal(fgm_perturbation(torch.zeros(3, 2), 1.0), torch.zeros(3, 2))


def test_embedding_matrix_is_untouched_and_no_gradient_is_left_by_the_perturbation(tiny_checkpoint, tiny_data):
    model, _, adv, batch = _setup(tiny_checkpoint, tiny_data)
    word = model.bert.embeddings.word
    before = word.weight.detach().clone()
    loss = adv.loss(model, batch)
    assert all(p.grad is None for p in model.parameters())  # computing r wrote no .grad anywhere
    r = adv.last_perturbation
    assert not r.requires_grad and r.grad_fn is None
    assert float(r.norm()) == pytest.approx(ARGS["adv_epsilon"], rel=1e-5)
    used = torch.zeros(r.size(0), dtype=torch.bool)
    used[batch["input_ids"].unique()] = True
    used[word.padding_idx] = False
    assert torch.equal(r.abs().sum(1) > 0, used)  # only the rows of the batch's (real) tokens move
    loss.backward()
    assert torch.equal(word.weight, before)  # bit for bit, before the optimizer's own update
    assert not word._forward_hooks and "embed" not in vars(model)


def test_hook_is_bit_identical_to_perturbing_the_matrix(tiny_checkpoint, tiny_data):
    model, _, adv, batch = _setup(tiny_checkpoint, tiny_data)
    adv.loss(model, batch)
    r, word = adv.last_perturbation, model.bert.embeddings.word
    model.eval()
    with torch.no_grad(), perturbed_embeddings(word, r):
        hooked = model.sentiment_logits(batch)
    saved = word.weight.detach().clone()
    with torch.no_grad():
        word.weight.add_(r)
        direct = model.sentiment_logits(batch)
        word.weight.copy_(saved)
    assert torch.equal(hooked, direct)


def test_total_loss_and_gradients_match_the_formula_with_r_a_constant(tiny_checkpoint, tiny_data):
    model, proc, adv, batch = _setup(tiny_checkpoint, tiny_data)
    adv.loss(model, batch).backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    W, project = model.bert.embeddings.word.weight, model.heads["cat_sst"]
    h = model.embed(batch["input_ids"], batch["attention_mask"])
    ce_clean = F.cross_entropy(model.heads["sentiment"](h), batch["labels"])
    (g,) = torch.autograd.grad(ce_clean, W, retain_graph=True)
    r = (ARGS["adv_epsilon"] * g / g.norm()).detach()  # a constant
    with perturbed_embeddings(model.bert.embeddings.word, r):
        h_adv = model.embed(batch["input_ids"], batch["attention_mask"])
        ce_adv = F.cross_entropy(model.heads["sentiment"](h_adv), batch["labels"])
    lam = ARGS["adv_lambda"]
    total = (1 - lam) / 2 * (ce_clean + ce_adv) + lam * info_nce(project(h), project(h_adv), ARGS["adv_temperature"])
    total.backward()
    assert set(got) == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(got[name], p.grad, rtol=1e-4, atol=1e-7), name


@pytest.mark.parametrize("task, heads, vectors", [("sts", {"sts_head": "cosine"}, 2), ("para", {"para_head": "siamese"}, 2),
                                                  ("para", {"para_head": "cross"}, 1),
                                                  ("para", {"para_head": "cross+siamese"}, 3)])
def test_pair_heads_contrast_their_pair_vectors(tiny_checkpoint, tiny_data, task, heads, vectors):
    model, _, adv, batch = _setup(tiny_checkpoint, tiny_data, task, **heads)
    assert model.heads[f"cat_{task}"][0].in_features == vectors * model.bert.config.hidden_size
    loss = adv.loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and model.heads[f"cat_{task}"][0].weight.grad.abs().sum() > 0


def test_adversarial_needs_a_trainable_encoder():
    with pytest.raises(ValueError, match="finetune"):
        adversarial_processors(argparse.Namespace(**{**ARGS, "option": "pretrain"}), None, {})


def _two_task_model(tiny_checkpoint, tiny_data, adv_tasks):
    """sst and para on one tiny encoder (dropout on), the processors as a run with --adv_tasks builds them."""
    torch.manual_seed(0)
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    model = MultitaskBert(BertModel.from_pretrained(tiny_checkpoint), ("sst", "para"))
    procs = {t: PROCESSORS[t].from_files(t, tok, train=tiny_data / f"{FILES[t]}-train.csv", max_examples=8,
                                         batch_size=8) for t in ("sst", "para")}
    if adv_tasks is not None:
        procs = adversarial_processors(argparse.Namespace(**ARGS, adv_tasks=adv_tasks), model, procs)
    return model, procs


def _loss_and_grads(model, proc):
    torch.manual_seed(123)  # the same dropout masks for both models
    model.zero_grad(set_to_none=True)
    loss = proc.loss(model, next(proc.batches(0)))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_adv_tasks_leaves_the_other_tasks_losses_and_gradients_exactly_as_base(tiny_checkpoint, tiny_data):
    base, base_procs = _two_task_model(tiny_checkpoint, tiny_data, None)
    cat, cat_procs = _two_task_model(tiny_checkpoint, tiny_data, "sst")
    assert set(cat.heads) - set(base.heads) == {"cat_sst"}  # one projection head, for the named task only
    assert cat_procs["para"] is not None and type(cat_procs["para"]) is type(base_procs["para"])
    base_loss, base_grads = _loss_and_grads(base, base_procs["para"])
    cat_loss_, cat_grads = _loss_and_grads(cat, cat_procs["para"])
    assert torch.equal(base_loss, cat_loss_) and base_grads.keys() == cat_grads.keys()
    assert all(torch.equal(base_grads[n], cat_grads[n]) for n in base_grads)  # bit for bit
    sst_base, _ = _loss_and_grads(base, base_procs["sst"])
    sst_cat, _ = _loss_and_grads(cat, cat_procs["sst"])
    assert not torch.equal(sst_base, sst_cat)  # while the named task does get CAT's loss
    every, _ = _two_task_model(tiny_checkpoint, tiny_data, "")
    assert {"cat_sst", "cat_para"} <= set(every.heads)  # empty: every task, as before the flag


def test_adv_tasks_names_only_the_runs_tasks_and_needs_adversarial(tiny_checkpoint, tiny_data):
    with pytest.raises(ValueError, match="--adv_tasks: unknown task 'sts'; this run's tasks are sst, para"):
        _two_task_model(tiny_checkpoint, tiny_data, "sts")
    from tasks.techniques import conflicts
    assert conflicts(argparse.Namespace(**{**ARGS, "adversarial": False}, adv_tasks="sst")) == \
        ["--adv_tasks names the tasks of --adversarial: add --adversarial"]
    assert conflicts(argparse.Namespace(**ARGS, adv_tasks="sst,cfimdb", tasks=["sst", "para", "sts"])) == \
        ["--adv_tasks: unknown task 'cfimdb'; this run's tasks are sst, para, sts"]
