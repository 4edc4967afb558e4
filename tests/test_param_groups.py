"""tasks/engine/param_groups.py: layer-wise lr decay (scales, groups, the trainer's optimizer) and re-initialising
the top layers; decay 1 is the old grouping."""
import pytest
import torch

from _tiny_multitask import tiny_multitask as _model
from minibert import BertModel, tiny_config
from optim import is_no_decay
from tasks.engine import TrainConfig, Trainer
from tasks.engine.param_groups import layer_lr_scales, param_groups, reinit_top_layers


def test_layer_lr_scales_follow_the_formula():
    names = ["bert.embeddings.word.weight", "bert.layers.0.attn.query.weight", "bert.layers.1.ffn.up.bias",
             "bert.layers.2.ffn_norm.weight", "bert.pooler.dense.weight"]
    d, L = 0.8, 3
    assert layer_lr_scales(names, d) == pytest.approx({
        names[0]: d ** (L + 1), names[1]: d ** (L - 0), names[2]: d ** (L - 1), names[3]: d ** (L - 2), names[4]: 1.0})
    with pytest.raises(ValueError, match="no encoder layer"):
        layer_lr_scales(["w", "b"], 0.9)


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
