"""The levers inside training, on a tiny random BERT: MNRL on a batch's duplicate pairs, R-Drop's two passes,
multi-sample dropout in the heads, the affine STS map, layer-wise lr decay in the optimizer's groups, and
re-initialising the top layers. Defaults must leave the default run's math as it was."""
import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minibert import BertModel, Tokenizer, tiny_config
from optim import is_no_decay
from tasks import classifier, multitask
from tasks.data import PairExample
from tasks.engine.param_groups import reinit_top_layers
from tasks.losses import mnrl_loss, rdrop_consistency, similarity_loss
from tasks.model import MultitaskBert
from tasks.processors import PROCESSORS, ParaphraseProcessor
from tasks.techniques import REGISTRY
from tasks.techniques.adversarial import adversarial_processors
from tasks.techniques.mnrl import MNRLConfig, MNRLProcessor
from tasks.techniques.rdrop import RDropProcessor
from tasks.engine import TrainConfig, Trainer
from tasks.engine.param_groups import param_groups

FILES = {"sst": "ids-sst", "para": "quora", "sts": "sts"}


def _model(checkpoint, tasks=("sst", "para", "sts"), encoder_dropout=0.0, **kw):
    torch.manual_seed(0)
    encoder = BertModel.from_pretrained(checkpoint, hidden_dropout_prob=encoder_dropout,
                                        attention_probs_dropout_prob=0.0)
    return MultitaskBert(encoder, tasks, tokenizer=Tokenizer.from_pretrained(checkpoint), **kw).train()


def _processor(model, data, task, **kw):
    form = {"para": {"form": model.para_mode}, "sts": {"form": "siamese" if model.sts_mode == "cosine" else "cross"}}
    return PROCESSORS[task].from_files(task, model.tokenizer, train=data / f"{FILES[task]}-train.csv", max_examples=8,
                                       batch_size=8, **form.get(task, {}), **kw)


# ---- MNRL ------------------------------------------------------------------------------------------------------

PAIRS = [("how do i cook", "how can i cook", 1), ("what is a dog", "what is the dog", 1), ("why", "why not", 0),
         ("the good movie", "a great film", 1), ("how do i cook", "cook how", 1), ("a cat runs", "the mat", 0)]


def test_mnrl_adds_weight_times_the_in_batch_loss_over_the_duplicates(tiny_checkpoint):
    model = _model(tiny_checkpoint, ("para",), dropout=0.0)
    train = [PairExample(f"q{i}", a, b, y) for i, (a, b, y) in enumerate(PAIRS)]
    base = ParaphraseProcessor("para", model.tokenizer, train=train, batch_size=8, form="cross")
    base.loss_weight = 2.0
    mnrl = MNRLProcessor(base, weight=0.7, scale=20.0, symmetric=True)
    assert mnrl.loss_weight == 2.0 and mnrl.num_batches() == 1
    batch = next(mnrl.batches(0))
    dup = [i for i, y in zip(batch["ids"], batch["labels"].tolist()) if y == 1]
    assert len(dup) == 4 and batch["mnrl_input_ids_1"].size(0) == 4
    pos = {i: k for k, i in enumerate(dup)}
    expected_mask = torch.zeros(4, 4, dtype=torch.bool)  # q0 and q4 share "how do i cook"
    expected_mask[pos["q0"], pos["q4"]] = expected_mask[pos["q4"], pos["q0"]] = True
    assert torch.equal(batch["mnrl_exclude"], expected_mask)
    by_id = {e.id: e for e in train}
    a = model.encode([by_id[i].sentence1 for i in dup], convert_to_tensor=True)  # eval mode, no dropout: the same vectors
    b = model.encode([by_id[i].sentence2 for i in dup], convert_to_tensor=True)
    expected = base.loss(model, batch) + 0.7 * mnrl_loss(a, b, 20.0, True, expected_mask)
    assert float(mnrl.loss(model, batch).detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_mnrl_is_off_by_default_and_skips_batches_without_two_duplicates(tiny_checkpoint):
    model = _model(tiny_checkpoint, ("para",))
    train = [PairExample("q0", "how do i cook", "how can i cook", 1), PairExample("q1", "why", "why not", 0)]
    base = ParaphraseProcessor("para", model.tokenizer, train=train, batch_size=8, form="cross")
    technique = REGISTRY["mnrl"]
    procs = {"para": base}
    assert technique.wrap_processors(MNRLConfig(), model, procs) is procs  # --para_mnrl_weight 0: untouched
    wrapped = technique.wrap_processors(MNRLConfig(para_mnrl_weight=1.0), model, procs)["para"]
    batch = next(wrapped.batches(0))
    assert not any(k.startswith("mnrl_") for k in batch)
    assert torch.equal(wrapped.loss(model, batch), base.loss(model, batch))
    with pytest.raises(ValueError, match="para"):
        technique.wrap_processors(MNRLConfig(para_mnrl_weight=1.0), model, {"sst": base})


# ---- R-Drop ----------------------------------------------------------------------------------------------------

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


# ---- multi-sample dropout and the STS map, through the model ---------------------------------------------------

def test_head_dropout_samples_average_the_head_over_k_masks(tiny_checkpoint, tiny_data):
    model = _model(tiny_checkpoint, ("sst",), dropout=0.5, head_dropout_samples=4)
    batch = next(_processor(model, tiny_data, "sst").batches(0))
    torch.manual_seed(3)
    got = model.sentiment_logits(batch)
    torch.manual_seed(3)
    h = model.embed(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # encoder: no dropout
    expected = sum(model.heads["sentiment"](model.drop(h)) for _ in range(4)) / 4
    assert torch.allclose(got, expected, atol=1e-6)
    model.eval()
    assert torch.equal(model.sentiment_logits(batch), model.heads["sentiment"](h))
    assert "head_dropout_samples" not in model.head_config()  # training only: nothing to save


def test_affine_sts_map_in_the_loss_and_the_predictions(tiny_checkpoint, tiny_data, tmp_path):
    model = _model(tiny_checkpoint, ("sts",), sts_cosine_map="affine").eval()
    proc = _processor(model, tiny_data, "sts")
    batch = next(proc.batches(0))
    u = model.embed(batch["input_ids_1"], batch["attention_mask_1"], batch["token_type_ids_1"])
    v = model.embed(batch["input_ids_2"], batch["attention_mask_2"], batch["token_type_ids_2"])
    cos = F.cosine_similarity(u, v, dim=-1)
    assert torch.allclose(model.similarity_scores(batch), (cos + 1) / 2)
    target = batch["labels"].float() / 5
    assert float(proc.loss(model, batch).detach()) == pytest.approx(float(F.mse_loss((cos + 1) / 2, target).detach()), rel=1e-5)
    assert proc.outputs_to_predictions(model, batch) == pytest.approx((5 * (cos + 1) / 2).tolist(), abs=1e-5)
    folder = model.save_pretrained(tmp_path / "model")
    loaded = MultitaskBert.from_pretrained(folder)
    assert loaded.head_config()["sts_cosine_map"] == "affine"
    a, b = ["the good movie", "why"], ["a great film", "the cat"]
    assert np.allclose(loaded.predict_similarity(a, b), model.predict_similarity(a, b), atol=1e-5)
    with pytest.raises(ValueError, match="cosine"):
        MultitaskBert(model.bert, ("sts",), sts_head="cross", sts_cosine_map="affine")


# ---- layer-wise lr decay and re-initialisation -------------------------------------------------------------------

def _old_param_groups(model, lr, head_lr, weight_decay):
    """param_groups as it was before --layer_lr_decay, the reference for the default."""
    encoder = {id(p) for p in model.encoder_parameters()}
    groups = {}
    for name, p in model.named_parameters():
        rate = lr if id(p) in encoder or head_lr is None else head_lr
        decay = 0.0 if is_no_decay(name, p) else weight_decay
        groups.setdefault((rate, decay), {"params": [], "lr": rate, "weight_decay": decay})["params"].append(p)
    return list(groups.values())


def test_layer_lr_decay_groups_follow_the_formula_and_decay_1_is_the_old_grouping(tiny_checkpoint):
    model = _model(tiny_checkpoint)
    names = {id(p): n for n, p in model.named_parameters()}
    L, lr, head_lr, d = model.bert.config.num_hidden_layers, 1e-3, 1e-2, 0.5

    def expected(name):
        if name.startswith("heads."):
            return head_lr
        if name.startswith("bert.embeddings."):
            return lr * d ** (L + 1)
        if name.startswith("bert.layers."):
            return lr * d ** (L - int(name.split(".")[2]))
        return lr  # the pooler

    groups = param_groups(model, lr, head_lr, 0.01, layer_lr_decay=d)
    seen = [names[id(p)] for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(names.values())
    for g in groups:
        for p in g["params"]:
            assert g["lr"] == pytest.approx(expected(names[id(p)]), rel=1e-12), names[id(p)]
            assert g["weight_decay"] == (0.0 if is_no_decay(names[id(p)], p) else 0.01)
    old, new = _old_param_groups(model, lr, head_lr, 0.01), param_groups(model, lr, head_lr, 0.01)
    assert [(g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in new] == \
        [(g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in old]


def test_trainer_builds_its_optimizer_with_the_decay(tiny_checkpoint, tmp_path):
    class OneBatch:
        def num_batches(self):
            return 1

    model = _model(tiny_checkpoint)
    config = TrainConfig(lr=1e-3, head_lr=1e-2, layer_lr_decay=0.9, epochs=1, out_dir=str(tmp_path))
    trainer = Trainer(model, {"x": OneBatch()}, config, lambda m: {"score": 0.0}, show_progress=False)
    want = [g["lr"] for g in param_groups(model, 1e-3, 1e-2, config.weight_decay, 0.9)]
    assert trainer.scheduler.base_lrs == pytest.approx(want) and len(set(want)) == 5  # embeddings, 2 layers, pooler, heads
    with pytest.raises(ValueError, match="layer_lr_decay"):
        TrainConfig(layer_lr_decay=0.0)


def test_reinit_changes_exactly_the_top_k_layers():
    torch.manual_seed(0)
    encoder = BertModel(tiny_config(num_hidden_layers=4))
    with torch.no_grad():  # stand-in pre-trained weights: nothing at its initial value (LayerNorms included)
        for p in encoder.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    reinit_top_layers(encoder, 2)
    after = encoder.state_dict()
    for name, value in after.items():
        top = name.startswith(("layers.2.", "layers.3."))
        assert torch.equal(value, before[name]) != top, name
        if top and "norm" in name:
            assert torch.equal(value, torch.ones_like(value) if name.endswith("weight") else torch.zeros_like(value))
        elif top and name.endswith("weight"):
            assert abs(float(value.std()) - encoder.config.initializer_range) < 0.01
    state = torch.get_rng_state()
    reinit_top_layers(encoder, 0)
    assert torch.equal(torch.get_rng_state(), state)  # k = 0 draws nothing: the default run is unchanged
    with pytest.raises(ValueError):
        reinit_top_layers(encoder, 5)


def test_every_lever_on_at_once_trains_and_predicts(tiny_checkpoint, tiny_data, tmp_path, capsys):
    scores = multitask.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--epochs", "1",
                             "--batch_size", "8", "--max_examples", "16", "--out_dir", str(tmp_path / "run"),
                             "--predictions_dir", str(tmp_path / "pred"), "--para_mnrl_weight", "0.5",
                             "--para_augment", "symmetric+transitive", "--rdrop_alpha", "1", "--head_dropout_samples",
                             "2", "--layer_lr_decay", "0.8", "--reinit_layers", "1", "--sts_cosine_map", "affine"])
    assert set(scores) == {"sst", "para", "sts", "overall"}
    assert "--para_augment symmetric+transitive adds" in capsys.readouterr().out
    assert MultitaskBert.from_pretrained(tmp_path / "run" / "model").head_config()["sts_cosine_map"] == "affine"


@pytest.mark.filterwarnings("ignore:checkpoint .* has no MLM head")
def test_classifier_with_a_phase_rdrop_and_layer_decay(tiny_checkpoint, tiny_data, tmp_path):
    """A DAE phase (which ignores --layer_lr_decay), then fine-tuning with R-Drop, the decay and a re-drawn layer."""
    scores = classifier.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--tasks", "sst",
                              "--epochs", "1", "--batch_size", "8", "--max_examples", "16", "--out_dir", str(tmp_path),
                              "--predictions_dir", str(tmp_path / "pred"), "--phases", "dae,finetune",
                              "--rdrop_alpha", "1", "--layer_lr_decay", "0.9", "--reinit_layers", "1"])
    assert 0 <= scores["sst"] <= 1
