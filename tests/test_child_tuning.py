"""Child-Tuning-F and -D: the F mask's keep rate, unbiasedness and smaller Adam step, D's exact top fraction and
its Fisher (clipped per tensor as the reference, by hand), masked parameters that do not move except by weight
decay, and flags off leaving training bit-identical."""
import io
import math

import pytest
import torch
from torch import nn

from optim import (AdamW, ChildTuningD, ChildTuningF, child_tuning_f, empirical_fisher, fisher_mask,
                   is_encoder_layer, make_child_tuning, top_fraction_mask)


class TinyBert(nn.Module):
    """Embeddings, two encoder layers ("layers.N." as in minibert) and a task head, with dropout."""

    def __init__(self, dropout=0.1):
        super().__init__()
        self.embeddings = nn.Embedding(11, 6)
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.LayerNorm(6)) for _ in range(2)])
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(6, 2)

    def forward(self, ids):
        x = self.embeddings(ids)
        for layer in self.layers:
            x = self.drop(layer(x))
        return self.head(x.mean(1))


def batches(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 11, (3, 5), generator=g), torch.randint(0, 2, (3,), generator=g)) for _ in range(n)]


def loss_fn(model, batch):
    ids, labels = batch
    return nn.functional.cross_entropy(model(ids), labels)


# --- Child-Tuning-F --------------------------------------------------------------------------------------------

def test_f_keep_rate_and_rescaling():
    p, n = 0.3, 200_000
    grad = torch.randn(n, generator=torch.Generator().manual_seed(0)).abs() + 0.1  # no zeros of its own
    masked = child_tuning_f(grad, p, generator=torch.Generator().manual_seed(1))
    kept = masked != 0
    assert abs(kept.float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
    torch.testing.assert_close(masked[kept], grad[kept] / p, rtol=1e-6, atol=0)
    assert torch.equal(grad, torch.randn(n, generator=torch.Generator().manual_seed(0)).abs() + 0.1)  # not in place


def test_f_is_unbiased_over_many_steps():
    """Mean of the masked gradient over many fresh masks ≈ the gradient, within 5 standard errors."""
    p, draws = 0.4, 4000
    grad = torch.randn(12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    param = nn.Parameter(torch.zeros(12, dtype=torch.float64))
    child = ChildTuningF(p, generator=torch.Generator().manual_seed(2))
    total, masks = torch.zeros_like(grad), set()
    for _ in range(draws):
        param.grad = grad.clone()
        child.apply([param])
        total += param.grad
        masks.add(tuple((param.grad != 0).tolist()))
    standard_error = grad.abs() * math.sqrt((1 - p) / p) / math.sqrt(draws)
    assert ((total / draws - grad).abs() <= 5 * standard_error).all()
    assert len(masks) > draws // 2  # a fresh mask each step, not one fixed mask


def test_f_is_reproducible_with_a_generator_and_masks_every_gradient():
    def run(seed):
        model = TinyBert()
        loss_fn(model, batches()[0]).backward()
        ChildTuningF(0.5, generator=torch.Generator().manual_seed(seed)).apply(model)
        return [p.grad.clone() for p in model.parameters()]

    torch.manual_seed(0)
    a = run(3)
    torch.manual_seed(0)
    b = run(3)
    torch.manual_seed(0)
    c = run(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(not torch.equal(x, y) for x, y in zip(a, c))
    zeros = sum(int((g == 0).sum()) for g in a)
    total = sum(g.numel() for g in a)
    assert 0.3 < zeros / total < 0.7  # the embeddings and the head are masked too, as in the reference


# --- Child-Tuning-D --------------------------------------------------------------------------------------------

def test_top_fraction_mask_keeps_exactly_the_top_fraction_globally():
    fisher = {
        "a": torch.tensor([[0.90, 0.10], [0.50, 0.30]]),
        "b": torch.tensor([0.80, 0.20, 0.70, 0.05]),
        "c": torch.tensor([0.60, 0.40]),
    }
    masks = top_fraction_mask(fisher, 0.5)  # 5 of 10: 0.9, 0.8, 0.7, 0.6, 0.5
    assert torch.equal(masks["a"], torch.tensor([[True, False], [True, False]]))
    assert torch.equal(masks["b"], torch.tensor([True, False, True, False]))
    assert torch.equal(masks["c"], torch.tensor([True, False]))
    assert sum(int(m.sum()) for m in top_fraction_mask(fisher, 0.3).values()) == 3
    assert all(m.all() for m in top_fraction_mask(fisher, 1.0).values())
    assert [n for n, m in top_fraction_mask(fisher, 0.1).items() if m.any()] == ["a"]  # only the 0.9


def test_top_fraction_mask_matches_a_sorting_reference_and_breaks_ties_by_position():
    g = torch.Generator().manual_seed(0)
    scores = {"x": torch.rand(40, 7, generator=g), "y": torch.rand(123, generator=g), "z": torch.rand(3, 3, 3)}
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    for p in (0.01, 0.2, 0.5, 0.93):
        k = round(p * flat.numel())
        reference = torch.zeros_like(flat, dtype=torch.bool)
        reference[torch.argsort(flat, descending=True)[:k]] = True
        got = torch.cat([m.reshape(-1) for m in top_fraction_mask(scores, p).values()])
        assert torch.equal(got, reference)
    ties = {"u": torch.tensor([1.0, 2.0, 2.0]), "v": torch.tensor([2.0, 3.0, 0.5])}  # 3 of 6: 3, then two 2s
    masks = top_fraction_mask(ties, 0.5)
    assert torch.equal(masks["u"], torch.tensor([False, True, True]))  # the first two 2s in order
    assert torch.equal(masks["v"], torch.tensor([False, True, False]))


def test_empirical_fisher_is_the_mean_squared_gradient_of_the_encoder_layers():
    torch.manual_seed(0)
    model = TinyBert(dropout=0.0)
    data = batches(5)
    fisher = empirical_fisher(model, data, loss_fn, max_batches=4, max_grad_norm=None)  # raw gradients
    assert sorted(fisher) == sorted(n for n, _ in model.named_parameters() if n.startswith("layers."))
    assert all(p.grad is None for p in model.parameters())
    params = dict(model.named_parameters())
    expected = {n: torch.zeros_like(params[n]) for n in fisher}
    for batch in data[:4]:
        grads = torch.autograd.grad(loss_fn(model, batch), [params[n] for n in fisher])
        for n, g in zip(fisher, grads):
            expected[n] += g ** 2 / 4
    for n in fisher:
        torch.testing.assert_close(fisher[n], expected[n], rtol=1e-6, atol=1e-12)


class TwoTensors(nn.Module):
    """Two encoder-layer tensors whose gradient is whatever the batch says: loss = a·g_a + b·g_b."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Module()])
        self.layers[0].a, self.layers[0].b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))


def linear_loss(model, batch):
    return (model.layers[0].a * batch[0]).sum() + (model.layers[0].b * batch[1]).sum()


# g_a, g_b per batch; the reference clips each tensor to norm 1 before squaring: [3, 4] -> [0.6, 0.8], [0, 2] -> [0, 1]
HAND_BATCHES = [(torch.tensor([3.0, 4.0]), torch.tensor([0.3, 0.4])), (torch.tensor([0.3, 0.4]), torch.tensor([0.0, 2.0]))]
CLIPPED = {"layers.0.a": [(0.36 + 0.09) / 2, (0.64 + 0.16) / 2], "layers.0.b": [(0.09 + 0.0) / 2, (0.16 + 1.0) / 2]}
RAW = {"layers.0.a": [(9 + 0.09) / 2, (16 + 0.16) / 2], "layers.0.b": [(0.09 + 0.0) / 2, (0.16 + 4.0) / 2]}


def test_fisher_clips_each_tensor_before_squaring_by_hand():
    for kwargs, expected in (({}, CLIPPED), (dict(max_grad_norm=None), RAW), (dict(max_grad_norm=0), RAW)):
        fisher = empirical_fisher(TwoTensors(), HAND_BATCHES, linear_loss, **kwargs)
        for name, values in expected.items():
            torch.testing.assert_close(fisher[name], torch.tensor(values), rtol=1e-5, atol=0)


def test_masks_after_clipping_differ_from_before_clipping():
    """Clipped, b's second weight (0.58) ranks first; raw, a's one batch of norm 5 dominates (8.08, 4.545)."""
    for p, clipped, raw in ((0.25, ([False, False], [False, True]), ([False, True], [False, False])),
                            (0.5, ([False, True], [False, True]), ([True, True], [False, False]))):
        got_clipped = fisher_mask(TwoTensors(), HAND_BATCHES, linear_loss, p)
        got_raw = fisher_mask(TwoTensors(), HAND_BATCHES, linear_loss, p, max_grad_norm=None)
        assert [got_clipped[n].tolist() for n in ("layers.0.a", "layers.0.b")] == list(clipped)
        assert [got_raw[n].tolist() for n in ("layers.0.a", "layers.0.b")] == list(raw)


def test_fisher_over_all_batches_when_max_batches_is_zero():
    data = HAND_BATCHES + [(torch.tensor([0.0, 0.5]), torch.tensor([0.5, 0.0]))]
    everything = empirical_fisher(TwoTensors(), data, linear_loss, max_batches=0)
    assert all(torch.equal(everything[n], f) for n, f in empirical_fisher(TwoTensors(), data, linear_loss).items())
    torch.testing.assert_close(everything["layers.0.a"], torch.tensor([0.45, 0.8 + 0.25]) / 3, rtol=1e-5, atol=0)
    two = empirical_fisher(TwoTensors(), data, linear_loss, max_batches=2)
    torch.testing.assert_close(two["layers.0.a"], torch.tensor(CLIPPED["layers.0.a"]), rtol=1e-5, atol=0)


def test_is_encoder_layer_on_huggingface_and_minibert_names():
    inside = ["encoder.layer.0.attention.self.query.weight", "bert.encoder.layer.11.output.LayerNorm.weight",
              "layers.3.attn.query.weight", "layers.0.ffn_norm.bias"]
    outside = ["embeddings.word_embeddings.weight", "embeddings.LayerNorm.weight", "embeddings.norm.weight",
               "pooler.dense.weight", "classifier.weight", "heads.0.weight", "layer_norm.weight"]
    assert all(is_encoder_layer(n) for n in inside)
    assert not any(is_encoder_layer(n) for n in outside)


def _masked_model_and_child(reserve_p=0.3):
    torch.manual_seed(0)
    model = TinyBert(dropout=0.0)
    child = ChildTuningD.from_fisher(model, batches(), loss_fn, reserve_p)
    return model, child


def test_d_zeroes_without_rescaling_and_leaves_embeddings_and_head_alone():
    model, child = _masked_model_and_child()
    assert child.kept_fraction() == pytest.approx(0.3, abs=0.01)
    loss_fn(model, batches(seed=1)[0]).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    child.apply(model)
    for n, p in model.named_parameters():
        if n in child.masks:
            assert torch.equal(p.grad, before[n] * child.masks[n])
        else:
            assert n.startswith(("embeddings", "head")) and torch.equal(p.grad, before[n])


def _train_masked(model, child, opt, steps: int) -> None:
    """`steps` updates with Child-Tuning's mask applied between backward and the step."""
    for batch in batches(steps, seed=2):
        opt.zero_grad()
        loss_fn(model, batch).backward()
        child.apply(model)
        opt.step()

@pytest.mark.parametrize("make_optimizer", [
    lambda ps: torch.optim.SGD(ps, lr=0.5),
    lambda ps: AdamW(ps, lr=1e-2),
    lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.0),
], ids=["sgd", "our-adamw", "torch-adamw"])
def test_parameters_outside_the_d_mask_do_not_move(make_optimizer):
    model, child = _masked_model_and_child()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train_masked(model, child, make_optimizer(model.parameters()), steps=6)
    for n, p in model.named_parameters():
        moved = p.detach() != start[n]
        if n in child.masks:
            assert not moved[~child.masks[n]].any(), n  # outside the mask: exactly where it started
        else:
            assert moved.any(), n  # embeddings and head train normally
    assert any(moved_inside for moved_inside in (
        (p.detach() != start[n])[child.masks[n]].any() for n, p in model.named_parameters() if n in child.masks))


def test_d_masked_weights_still_decay_as_in_the_reference():
    """The mask zeroes gradients, not the update: AdamW's decoupled decay shrinks every masked-out weight by
    (1 − lr · wd) a step, as the reference's ChildTuningAdamW does."""
    model, child = _masked_model_and_child()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train_masked(model, child, torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.5), steps=3)
    for n, p in model.named_parameters():
        if n in child.masks:
            out = ~child.masks[n]
            torch.testing.assert_close(p.detach()[out], start[n][out] * (1 - 1e-2 * 0.5) ** 3)


def test_f_shrinks_the_adam_step_to_about_sqrt_p():
    """Adam on a steady gradient moves lr a step; through -F's mask E[g̃] = g but E[g̃²] = g²/p, so the step
    is about √p · lr (0.548 at p = 0.3): Child-Tuning-F also acts as a smaller learning rate."""
    def mean_step(child, steps=300, n=20_000):
        param = nn.Parameter(torch.zeros(n, dtype=torch.float64))
        opt = torch.optim.AdamW([param], lr=1e-3, weight_decay=0.0, eps=1e-12)
        for _ in range(steps):
            before = param.detach().clone()
            param.grad = torch.ones_like(param)
            if child is not None:
                child.apply([param])
            opt.step()
        return (before - param.detach()).mean().item() / 1e-3

    assert mean_step(None) == pytest.approx(1.0, rel=1e-6)
    assert mean_step(ChildTuningF(0.3, torch.Generator().manual_seed(0))) == pytest.approx(math.sqrt(0.3), rel=0.02)


def test_state_dicts_resume_the_same_masks():
    """F: the generator's state continues the same sequence of masks; D: the fixed masks come back as saved."""
    grad = torch.randn(50)
    param = nn.Parameter(torch.zeros(50))

    def masks(child, n):
        out = []
        for _ in range(n):
            param.grad = grad.clone()
            child.apply([param])
            out.append(param.grad != 0)
        return out

    straight = masks(ChildTuningF(0.5, torch.Generator().manual_seed(0)), 6)
    first = ChildTuningF(0.5, torch.Generator().manual_seed(0))
    head = masks(first, 3)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = ChildTuningF(0.9, torch.Generator().manual_seed(123))
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.reserve_p == 0.5
    assert all(torch.equal(a, b) for a, b in zip(straight, head + masks(resumed, 3)))

    _, child = _masked_model_and_child()
    buffer = io.BytesIO()
    torch.save(child.state_dict(), buffer)
    buffer.seek(0)
    restored = ChildTuningD({})
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.masks.keys() == child.masks.keys()
    assert all(torch.equal(restored.masks[n], child.masks[n]) for n in child.masks)


def test_d_mask_applies_only_to_its_own_model():
    _, child = _masked_model_and_child()
    with pytest.raises(ValueError, match="no parameter named"):
        child.apply(nn.Linear(2, 2))


# --- flags --------------------------------------------------------------------------------------------------

def _train(flag, steps=5):
    """The training loop's wiring: build Child-Tuning from the flag, then mask between backward and step."""
    torch.manual_seed(0)
    model = TinyBert(dropout=0.3)  # dropout draws from the global RNG: any extra draw would show
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    child = make_child_tuning(flag, 0.3, model=model, batches=batches(), loss_fn=loss_fn)
    for batch in batches(steps, seed=3):
        opt.zero_grad()
        loss_fn(model, batch).backward()
        if child is not None:
            child.apply(model)
        opt.step()
    return [p.detach().clone() for p in model.parameters()], torch.get_rng_state()


def _train_without_child_tuning(steps=5):
    torch.manual_seed(0)
    model = TinyBert(dropout=0.3)
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    for batch in batches(steps, seed=3):
        opt.zero_grad()
        loss_fn(model, batch).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()], torch.get_rng_state()


@pytest.mark.parametrize("flag", [None, "none", "off", ""])
def test_flags_off_is_bit_identical_to_no_child_tuning(flag):
    params, rng = _train(flag)
    ref_params, ref_rng = _train_without_child_tuning()
    assert all(torch.equal(a, b) for a, b in zip(params, ref_params))
    assert torch.equal(rng, ref_rng)
    assert make_child_tuning(flag, 0.3) is None


def test_flags_on_change_training():
    ref_params, _ = _train_without_child_tuning()
    for flag in ("F", "D", "d"):
        params, _ = _train(flag)
        assert any(not torch.equal(a, b) for a, b in zip(params, ref_params)), flag
    assert isinstance(make_child_tuning("F", 0.2), ChildTuningF)


@pytest.mark.parametrize("call, name", [
    (lambda: make_child_tuning("G", 0.3), "mode"),
    (lambda: make_child_tuning("D", 0.3), "model"),
    (lambda: ChildTuningF(0.0), "reserve_p"),
    (lambda: ChildTuningF(1.5), "reserve_p"),
    (lambda: child_tuning_f(torch.ones(2), -0.1), "reserve_p"),
    (lambda: top_fraction_mask({"a": torch.ones(2)}, 0.0), "reserve_p"),
    (lambda: fisher_mask(TinyBert(), batches(), loss_fn, 0.3, param_filter=lambda n: False), "param_filter"),
    (lambda: fisher_mask(TinyBert(), [], loss_fn, 0.3), "batches"),
])
def test_invalid_arguments_raise_value_error(call, name):
    with pytest.raises(ValueError, match=name):
        call()
