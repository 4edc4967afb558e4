"""PCGrad: hand-computed cases, the two-task closed form, a NumPy reference for the random order, and the
optimizer wrapper against the pure function applied to autograd's gradients."""
import numpy as np
import pytest
import torch
from torch import nn

from optim import AdamW, PCGrad, pairwise_cosines, pcgrad, project_conflicting


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_two_d_by_hand():
    # g1·g2 = −1 < 0.  g1 − (−1/2)·g2 = (½, ½);  g2 − (−1/1)·g1 = (0, 1);  sum (½, 3/2).
    g1, g2 = t(1.0, 0.0), t(-1.0, 1.0)
    assert torch.equal(project_conflicting([g1, g2]), t(0.5, 0.5, 0.0, 1.0).view(2, 2))
    assert torch.equal(pcgrad([g1, g2]), t(0.5, 1.5))
    assert torch.equal(pcgrad([g1, g2], reduction="mean"), t(0.25, 0.75))


def test_three_d_by_hand():
    # g1 = (1, 2, 0), g2 = (−1, 0, 1): g1·g2 = −1, ‖g2‖² = 2, ‖g1‖² = 5.
    # g1 + ½·g2 = (½, 2, ½);  g2 + ⅕·g1 = (−⅘, ⅖, 1);  sum (−3/10, 12/5, 3/2).
    g1, g2 = t(1.0, 2.0, 0.0), t(-1.0, 0.0, 1.0)
    torch.testing.assert_close(project_conflicting([g1, g2]), torch.stack([t(0.5, 2.0, 0.5), t(-0.8, 0.4, 1.0)]),
                               rtol=0, atol=1e-15)

    torch.testing.assert_close(pcgrad([g1, g2]), t(-0.3, 2.4, 1.5), rtol=0, atol=1e-15)


def test_non_conflicting_gradients_give_the_plain_sum():
    G = torch.tensor([[1.0, 2.0, 0.0, 1.0], [0.5, 0.0, 3.0, 1.0], [2.0, 1.0, 1.0, 0.0]])
    assert (G @ G.T >= 0).all()
    assert torch.equal(project_conflicting(G), G)
    torch.testing.assert_close(pcgrad(G), G.sum(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(pcgrad(G, reduction="mean"), G.mean(0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_two_conflicting_tasks_closed_form_and_no_conflict_left(seed):
    g = torch.Generator().manual_seed(seed)
    g1 = torch.randn(50, generator=g, dtype=torch.float64)
    g2 = -0.5 * g1 + torch.randn(50, generator=g, dtype=torch.float64)  # conflicting by construction
    dot = g1 @ g2
    assert dot < 0
    closed = (g1 - dot / (g2 @ g2) * g2) + (g2 - dot / (g1 @ g1) * g1)
    result = pcgrad([g1, g2])
    torch.testing.assert_close(result, closed, rtol=0, atol=1e-12)
    assert result @ g1 >= 0 and result @ g2 >= 0
    assert not torch.allclose(result, g1 + g2)
    p1, p2 = project_conflicting([g1, g2])
    assert abs(p1 @ g2) < 1e-12 and abs(p2 @ g1) < 1e-12  # each projected onto the other's normal plane


def numpy_pcgrad(G, orders, reduction):
    """Algorithm 1 of the paper in NumPy, with the order of the other tasks given for each i."""
    out = []
    for i, order in enumerate(orders):
        g = G[i].copy()
        for j in order:
            if g @ G[j] < 0:
                g = g - (g @ G[j]) / (G[j] @ G[j]) * G[j]
        out.append(g)
    out = np.stack(out)
    return out.sum(0) if reduction == "sum" else out.mean(0)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_random_order_matches_numpy_reference_and_is_reproducible(reduction):
    g = torch.Generator().manual_seed(0)
    G = torch.randn(4, 30, generator=g, dtype=torch.float64)
    G[1] -= 2 * G[0]  # make several pairs conflict, so that the order matters
    G[3] -= G[2] + G[1]
    # The orders pcgrad draws: torch.randperm(T − 1) for each task in turn, over the other tasks.
    draw = torch.Generator().manual_seed(7)
    orders = []
    for i in range(4):
        others = [j for j in range(4) if j != i]
        orders.append([others[k] for k in torch.randperm(3, generator=draw).tolist()])
    expected = numpy_pcgrad(G.numpy(), orders, reduction)
    first = pcgrad(G, reduction, generator=torch.Generator().manual_seed(7))
    again = pcgrad(G, reduction, generator=torch.Generator().manual_seed(7))
    np.testing.assert_allclose(first.numpy(), expected, rtol=0, atol=1e-12)
    assert torch.equal(first, again)
    # The order matters here: over a few seeds pcgrad takes more than one value.
    results = {tuple(pcgrad(G, reduction, generator=torch.Generator().manual_seed(s)).tolist()) for s in range(20)}
    assert len(results) > 1


def test_zero_norm_gradients_are_safe():
    g1, zero = t(1.0, -2.0, 3.0), t(0.0, 0.0, 0.0)
    assert torch.equal(pcgrad([g1, zero]), g1)
    assert torch.equal(pcgrad([zero, zero]), zero)
    assert torch.isfinite(pcgrad([g1, zero, -g1])).all()
    # A gradient whose squared norm underflows to 0 is not divided by.
    tiny = torch.tensor([-1e-30, 0.0, 0.0])
    assert torch.isfinite(pcgrad([torch.tensor([1.0, 0.0, 0.0]), tiny])).all()


def test_input_is_not_modified_and_one_task_is_returned_as_is():
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    before = G.clone()
    pcgrad(G)
    assert torch.equal(G, before)
    assert torch.equal(pcgrad([t(1.0, 2.0)]), t(1.0, 2.0))


@pytest.mark.parametrize("call, name", [
    (lambda: pcgrad([t(1.0)], reduction="max"), "reduction"),
    (lambda: pcgrad([]), "grads"),
    (lambda: pcgrad([t(1.0, 2.0), t(1.0)]), "grads"),
    (lambda: pcgrad(torch.zeros(3)), "grads"),
    (lambda: PCGrad(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), reduction="none"), "reduction"),
])
def test_invalid_arguments_raise_value_error(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# --- the wrapper ----------------------------------------------------------------------------------------------

class TwoHeads(nn.Module):
    """A shared trunk and one head per task (three tasks, three heads that start equal)."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6))
        self.heads = nn.ModuleList([nn.Linear(6, 1) for _ in range(3)])
        for head in self.heads[1:]:
            head.load_state_dict(self.heads[0].state_dict())

    def loss(self, task, x, y):
        return nn.functional.mse_loss(self.heads[task](self.trunk(x)).squeeze(-1), y)


def task_batches(seed=0):
    """One batch per task; the targets pull the shared trunk in opposite directions, so the tasks conflict."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(7, 5, generator=g), torch.randn(7, generator=g) + shift) for shift in (3.0, -3.0, 1.0)]


def flat_grad(loss, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, materialize_grads=True)])


def test_wrapper_equals_pure_function_on_autograd_gradients():
    torch.manual_seed(0)
    model, batches = TwoHeads(), task_batches()
    shared = list(model.trunk.parameters())
    # Reference: autograd's per-task gradients, the pure function, and each head's own gradient.
    G = torch.stack([flat_grad(model.loss(i, *b), shared) for i, b in enumerate(batches)])
    expected = pcgrad(G, generator=torch.Generator().manual_seed(3))
    head_grads = [torch.autograd.grad(model.loss(i, *b), list(model.heads[i].parameters()))
                  for i, b in enumerate(batches)]
    assert (G @ G.T < 0).any()  # the tasks conflict somewhere, so the surgery did something
    cosines = G @ G.T / torch.outer(G.norm(dim=1), G.norm(dim=1))

    pc = PCGrad(torch.optim.SGD(model.parameters(), lr=0.1), shared_params=shared,
                generator=torch.Generator().manual_seed(3))
    pc.zero_grad()
    pc.backward([model.loss(i, *b) for i, b in enumerate(batches)])
    got = torch.cat([p.grad.reshape(-1) for p in shared])
    assert torch.equal(got, expected)
    torch.testing.assert_close(pc.last_cosines.float(), cosines, rtol=0, atol=1e-6)  # of the gradients before projection
    for i in range(3):
        for p, ref in zip(model.heads[i].parameters(), head_grads[i]):
            assert torch.equal(p.grad, ref)

    before = [p.detach().clone() for p in model.parameters()]
    pc.step()
    for p, old in zip(model.parameters(), before):
        torch.testing.assert_close(p, old - 0.1 * p.grad, rtol=0, atol=1e-7)


def test_wrapper_with_our_adamw_and_shared_batch_needs_retain_graph():
    """One batch and several heads share a forward graph: retain_graph=True lets each task backpropagate."""
    torch.manual_seed(0)
    model = TwoHeads()
    x, _ = task_batches()[0]
    targets = [torch.full((7,), float(v)) for v in (-2.0, 0.5, 3.0)]
    shared = list(model.trunk.parameters())
    G = torch.stack([flat_grad(model.loss(i, x, y), shared) for i, y in enumerate(targets)])
    expected = pcgrad(G, "mean", generator=torch.Generator().manual_seed(1))

    pc = PCGrad(AdamW(model.parameters(), lr=1e-2), shared_params=shared, reduction="mean",
                generator=torch.Generator().manual_seed(1))
    h = model.trunk(x)
    losses = [nn.functional.mse_loss(model.heads[i](h).squeeze(-1), y) for i, y in enumerate(targets)]
    with pytest.raises(RuntimeError):  # without retain_graph the second backward finds the graph freed
        PCGrad(AdamW(model.parameters()), shared_params=shared).backward(losses)
    model.zero_grad()
    h = model.trunk(x)
    losses = [nn.functional.mse_loss(model.heads[i](h).squeeze(-1), y) for i, y in enumerate(targets)]
    pc.backward(losses, retain_graph=True)
    torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in shared]), expected, rtol=0, atol=1e-7)
    before = [p.detach().clone() for p in shared]
    pc.step()
    assert all(not torch.equal(p, b) for p, b in zip(shared, before))
    assert pc.state_dict()["state"][0]["step"] == 1


def test_wrapper_adds_to_existing_gradients_and_defaults_to_all_optimizer_params():
    torch.manual_seed(0)
    model, batches = TwoHeads(), task_batches()
    params = list(model.parameters())
    G = torch.stack([flat_grad(model.loss(i, *b), params) for i, b in enumerate(batches)])
    expected = pcgrad(G, generator=torch.Generator().manual_seed(5))
    earlier = [torch.full_like(p, 0.25) for p in params]
    for p, e in zip(params, earlier):
        p.grad = e.clone()
    pc = PCGrad(torch.optim.SGD(params, lr=0.1), generator=torch.Generator().manual_seed(5))
    assert len(pc.shared_params) == len(params)
    pc.backward([model.loss(i, *b) for i, b in enumerate(batches)])
    got = torch.cat([p.grad.reshape(-1) for p in params])
    torch.testing.assert_close(got, expected + 0.25, rtol=0, atol=1e-6)


def test_pairwise_cosines_by_hand_and_against_numpy():
    # (1, 0)·(−1, 1) = −1, norms 1 and √2: cos = −1/√2; (1, 0)·(0, 2) = 0; (−1, 1)·(0, 2) = 2, norms √2, 2: 1/√2.
    got = pairwise_cosines([t(1.0, 0.0), t(-1.0, 1.0), t(0.0, 2.0)])
    r = 1 / np.sqrt(2)
    np.testing.assert_allclose(got.numpy(), [[1, -r, 0], [-r, 1, r], [0, r, 1]], rtol=0, atol=1e-15)
    G = torch.randn(4, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    n = G.numpy()
    reference = n @ n.T / np.outer(np.linalg.norm(n, axis=1), np.linalg.norm(n, axis=1))
    np.testing.assert_allclose(pairwise_cosines(G).numpy(), reference, rtol=0, atol=1e-12)
    # a conflict is exactly where PCGrad projects: cos < 0 ⟺ gᵢ·gⱼ < 0
    assert torch.equal(pairwise_cosines(G) < 0, G @ G.T < 0)


def test_pairwise_cosines_of_a_zero_gradient_are_zero_not_nan():
    got = pairwise_cosines([t(1.0, 2.0), t(0.0, 0.0)])
    torch.testing.assert_close(got, t(1.0, 0.0, 0.0, 0.0).view(2, 2), rtol=0, atol=1e-15)
