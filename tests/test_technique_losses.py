"""The techniques' losses against their formulas written out as loops over tiny tensors."""
import math

import pytest
import torch
import torch.nn.functional as F

from tasks.domain.losses import cat_loss, cosine_mse_loss, info_nce, supcon_loss


def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def test_cosine_mse_is_the_mean_squared_gap_between_label_and_cosine():
    u, v = torch.randn(5, 3), torch.randn(5, 3)
    same = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    expected = sum((float(same[i]) - _cos(u[i], v[i])) ** 2 for i in range(5)) / 5
    assert float(cosine_mse_loss(u, v, same)) == pytest.approx(expected, rel=1e-6)
    assert float(cosine_mse_loss(u, 2.5 * u, torch.ones(5))) == pytest.approx(0.0, abs=1e-6)  # parallel, same class


@pytest.mark.parametrize("tau", [0.05, 0.5])
def test_info_nce_over_2n_views(tau):
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    z = torch.cat([z1, z2])
    N, total = 4, 0.0
    for i in range(2 * N):
        pos = (i + N) % (2 * N)
        denom = sum(math.exp(_cos(z[i], z[k]) / tau) for k in range(2 * N) if k != i)
        total += -math.log(math.exp(_cos(z[i], z[pos]) / tau) / denom)
    assert float(info_nce(z1, z2, tau)) == pytest.approx(total / (2 * N), rel=1e-5)


def test_info_nce_is_smallest_when_views_agree():
    z = torch.randn(6, 8)
    assert info_nce(z, z, 0.1) < info_nce(z, torch.randn(6, 8), 0.1)


@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_supcon_against_its_formula(tau):
    feats = torch.randn(7, 4)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])  # classes 2 and 3 have no positive: not anchors
    z = F.normalize(feats, dim=-1)
    terms = []
    for i in range(7):
        positives = [p for p in range(7) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(7) if a != i)
        terms.append(-sum(math.log(math.exp(float(z[i] @ z[p]) / tau) / denom) for p in positives) / len(positives))
    assert float(supcon_loss(feats, labels, tau)) == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_supcon_without_positives_is_zero_and_differentiable():
    feats = torch.randn(3, 4, requires_grad=True)
    loss = supcon_loss(feats, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(feats.grad, torch.zeros(3, 4))


def test_cat_total_weights_the_three_losses():
    ce_clean, ce_adv, con = torch.tensor(1.2), torch.tensor(2.0), torch.tensor(0.7)
    for lam in (0.0, 0.3, 1.0):
        assert float(cat_loss(ce_clean, ce_adv, con, lam)) == pytest.approx((1 - lam) / 2 * 3.2 + lam * 0.7)
