"""optim.AdamW against its references: torch.optim.AdamW (mode="torch") and a NumPy transcription of the
docstring's equations (mode="coursework"); plus resume, the vectorised path, and argument checks."""
import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from optim import AdamW, param_groups_no_decay


STEPS = 1000


def regression_problem(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(32, 6, generator=g, dtype=dtype)
    Y = torch.randn(32, 2, generator=g, dtype=dtype)
    return X, Y


def small_mlp(seed=1, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).to(dtype)


def three_groups(model, weight_decay):
    """Several groups with their own lr / weight decay, as a fine-tuning run would have."""
    return [
        {"params": [model[0].weight]},  # the optimizer's defaults
        {"params": [model[0].bias], "weight_decay": 0.0},
        {"params": list(model[2].parameters()), "lr": 3e-3, "weight_decay": 2 * weight_decay},
    ]


def train(model, optimizer, X, Y, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(X), Y).backward()
        optimizer.step()


def max_abs_diff(tensors_a, tensors_b):
    return max((a - b).abs().max().item() for a, b in zip(tensors_a, tensors_b))


# --- mode="torch" against torch.optim.AdamW ----------------------------------------------------------------

@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("foreach", [False, True])
def test_torch_mode_matches_torch_adamw_over_1000_steps(weight_decay, foreach):
    X, Y = regression_problem()
    ours_model, ref_model = small_mlp(), small_mlp()
    kw = dict(lr=1e-2, betas=(0.9, 0.98), eps=1e-6, weight_decay=weight_decay)
    ours = AdamW(three_groups(ours_model, weight_decay), mode="torch", foreach=foreach, **kw)
    ref = torch.optim.AdamW(three_groups(ref_model, weight_decay), foreach=foreach, **kw)
    for _ in range(STEPS):
        for model, opt in ((ours_model, ours), (ref_model, ref)):
            opt.zero_grad()
            nn.functional.mse_loss(model(X), Y).backward()
            opt.step()
    ours_p, ref_p = list(ours_model.parameters()), list(ref_model.parameters())
    assert max_abs_diff(ours_p, ref_p) <= 1e-6
    assert max_abs_diff([ours.state[p]["exp_avg"] for p in ours_p], [ref.state[p]["exp_avg"] for p in ref_p]) <= 1e-6
    assert max_abs_diff([ours.state[p]["exp_avg_sq"] for p in ours_p],
                        [ref.state[p]["exp_avg_sq"] for p in ref_p]) <= 1e-6
    assert all(ours.state[p]["step"] == STEPS for p in ours_p)
    # The run really moved the parameters (so the comparison is not of two untouched models).
    assert max_abs_diff(ours_p, list(small_mlp().parameters())) > 1e-2


def test_coursework_mode_differs_from_torch_adamw():
    """The two modes are not the same algorithm: eps placement and decay order show after a few steps."""
    X, Y = regression_problem()
    a, b = small_mlp(), small_mlp()
    train(a, AdamW(a.parameters(), lr=1e-2, eps=1e-3, weight_decay=0.1), X, Y, 20)
    train(b, torch.optim.AdamW(b.parameters(), lr=1e-2, eps=1e-3, weight_decay=0.1), X, Y, 20)
    assert max_abs_diff(list(a.parameters()), list(b.parameters())) > 1e-5


# --- mode="coursework" against a NumPy transcription of the docstring -------------------------------------

def numpy_adamw(params, grad_fn, groups, steps):
    """The module docstring's equations, one line each. params: dict name -> array; groups: list of
    (names, lr, beta1, beta2, eps, wd, correct_bias)."""
    params = dict(params)
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    for t in range(1, steps + 1):
        grads = grad_fn(params)
        for names, lr, b1, b2, eps, wd, correct_bias in groups:
            alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) if correct_bias else lr
            for k in names:
                m[k] = b1 * m[k] + (1 - b1) * grads[k]
                v[k] = b2 * v[k] + (1 - b2) * grads[k] ** 2
                params[k] = params[k] - alpha * m[k] / (np.sqrt(v[k]) + eps)
                params[k] = params[k] - lr * wd * params[k]
    return params


def linear_regression_grads(X, Y):
    """∂/∂(W, b) of mean((X Wᵀ + b − Y)²), by hand."""
    def grad_fn(p):
        R = X @ p["W"].T + p["b"] - Y
        dR = 2.0 * R / R.size
        return {"W": dR.T @ X, "b": dR.sum(axis=0)}
    return grad_fn


@pytest.mark.parametrize("correct_bias", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_coursework_mode_matches_numpy_equations_over_1000_steps(correct_bias, weight_decay):
    X, Y = (t.numpy() for t in regression_problem(dtype=torch.float64))
    torch.manual_seed(2)
    lin = nn.Linear(6, 2).double()
    start = {"W": lin.weight.detach().numpy().copy(), "b": lin.bias.detach().numpy().copy()}
    lr_w, lr_b, betas, eps = 1e-2, 3e-3, (0.9, 0.999), 1e-6
    opt = AdamW([{"params": [lin.weight]}, {"params": [lin.bias], "lr": lr_b, "weight_decay": 0.0}], lr=lr_w,
                betas=betas, eps=eps, weight_decay=weight_decay, correct_bias=correct_bias)
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    for _ in range(STEPS):
        opt.zero_grad()
        nn.functional.mse_loss(lin(Xt), Yt).backward()
        opt.step()
    ref = numpy_adamw(start, linear_regression_grads(X, Y),
                      [(["W"], lr_w, *betas, eps, weight_decay, correct_bias),
                       (["b"], lr_b, *betas, eps, 0.0, correct_bias)], STEPS)
    np.testing.assert_allclose(lin.weight.detach().numpy(), ref["W"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(lin.bias.detach().numpy(), ref["b"], rtol=0, atol=1e-12)
    assert np.abs(ref["W"] - start["W"]).max() > 1e-2  # it trained


@pytest.mark.parametrize("mode", ["coursework", "torch"])
def test_first_step_by_hand(mode):
    """One scalar step, each equation evaluated with math: p=1, g=0.5, lr=0.1, wd=0.1."""
    lr, b1, b2, eps, wd, g = 0.1, 0.9, 0.999, 1e-6, 0.1, 0.5
    p = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    p.grad = torch.tensor([g], dtype=torch.float64)
    AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, mode=mode).step()
    m, v = (1 - b1) * g, (1 - b2) * g * g
    if mode == "coursework":
        after = 1.0 - lr * math.sqrt(1 - b2) / (1 - b1) * m / (math.sqrt(v) + eps)
        expected = after - lr * wd * after
    else:
        decayed = 1.0 * (1 - lr * wd)
        expected = decayed - lr * (m / (1 - b1)) / (math.sqrt(v / (1 - b2)) + eps)
    assert p.item() == pytest.approx(expected, rel=0, abs=1e-15)
    sign_step = (1.0 - lr) * (1 - lr * wd) if mode == "coursework" else (1.0 - lr * wd) - lr
    assert p.item() == pytest.approx(sign_step, abs=1e-5)  # Adam's first step is ≈ lr·sign(g)


# --- the vectorised path, resume, mechanics ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["coursework", "torch"])
def test_foreach_path_is_bit_identical_to_single_tensor_path(mode):
    X, Y = regression_problem()
    models = [small_mlp(), small_mlp()]
    for m in models:  # a float64 parameter too, so the foreach path must bucket by dtype
        m.extra = nn.Parameter(torch.linspace(-1, 1, 5, dtype=torch.float64))
    opts = [AdamW(three_groups(m, 0.05) + [{"params": [m.extra]}], lr=1e-2, weight_decay=0.05, mode=mode,
                  foreach=fe) for m, fe in zip(models, (False, True))]
    for _ in range(200):
        for m, opt in zip(models, opts):
            opt.zero_grad()
            (nn.functional.mse_loss(m(X), Y) + (m.extra ** 3).sum()).backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["coursework", "torch"])
def test_resume_from_state_dict_is_bit_identical(mode):
    X, Y = regression_problem()
    kw = dict(lr=1e-2, weight_decay=0.05, mode=mode)
    straight = small_mlp()
    train(straight, AdamW(three_groups(straight, 0.05), **kw), X, Y, 60)

    first = small_mlp()
    opt = AdamW(three_groups(first, 0.05), **kw)
    train(first, opt, X, Y, 30)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed = small_mlp(seed=123)  # different initial weights: everything must come from the checkpoint
    resumed.load_state_dict(saved["model"])
    opt2 = AdamW(three_groups(resumed, 0.05), lr=0.5, weight_decay=0.0, mode=mode)  # overwritten by the load
    opt2.load_state_dict(saved["optimizer"])
    assert [g["lr"] for g in opt2.param_groups] == [1e-2, 1e-2, 3e-3]
    train(resumed, opt2, X, Y, 30)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert opt2.state[resumed[0].weight]["step"] == 60


def test_parameters_without_grad_are_skipped_and_closure_is_returned():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt = AdamW([a, b], lr=0.1, weight_decay=0.1)

    def closure():
        opt.zero_grad()
        loss = (a * 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 6.0
    assert torch.equal(b, torch.ones(3)) and b not in opt.state  # no grad: no update, not even decay
    assert (a < 1).all() and opt.state[a]["step"] == 1


@pytest.mark.parametrize("kwargs, name", [
    (dict(lr=-1e-3), "lr"), (dict(lr="fast"), "lr"), (dict(betas=(1.0, 0.999)), "beta"),
    (dict(betas=(0.9, -0.1)), "beta"), (dict(betas=(0.9,)), "betas"), (dict(eps=-1e-8), "eps"),
    (dict(weight_decay=-0.01), "weight_decay"), (dict(correct_bias="yes"), "correct_bias"),
    (dict(mode="adam"), "mode"), (dict(foreach="auto"), "foreach"),
])
def test_invalid_hyperparameters_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AdamW([nn.Parameter(torch.zeros(2))], **kwargs)


def test_invalid_group_hyperparameter_raises():
    p, q = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="weight_decay"):
        AdamW([{"params": [p]}, {"params": [q], "weight_decay": -1.0}])


def test_sparse_gradients_and_integer_parameters_are_rejected():
    emb = nn.Embedding(10, 3, sparse=True)
    opt = AdamW(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    with pytest.raises(ValueError, match="floating-point"):
        AdamW([torch.zeros(2, dtype=torch.long)])


# --- no-decay parameter groups --------------------------------------------------------------------------------

class TinyEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.proj = nn.Linear(4, 4)
        self.LayerNorm = nn.LayerNorm(4)
        self.attn_norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_param_groups_no_decay_splits_biases_and_norms():
    model = TinyEncoder()
    groups = param_groups_no_decay(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in groups[0]["params"])
    plain = sorted(names[id(p)] for p in groups[1]["params"])
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    assert decayed == ["embed.weight", "head.weight", "proj.weight"]
    assert plain == ["LayerNorm.bias", "LayerNorm.weight", "attn_norm.bias", "attn_norm.weight", "head.bias",
                     "proj.bias"]
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups_no_decay(model, -1.0)


def test_no_decay_group_is_not_decayed_by_adamw():
    """With zero gradients AdamW's Adam part is 0, so only decay moves a weight: by the factor (1 − lr·wd)."""
    model = TinyEncoder()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = AdamW(param_groups_no_decay(model, 0.1), lr=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    now = dict(model.named_parameters())
    assert torch.equal(now["LayerNorm.weight"], before["LayerNorm.weight"])
    assert torch.equal(now["proj.bias"], before["proj.bias"])
    torch.testing.assert_close(now["proj.weight"], before["proj.weight"] * (1 - 0.5 * 0.1), rtol=0, atol=1e-7)
