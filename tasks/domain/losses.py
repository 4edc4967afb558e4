"""Losses beyond torch's built-ins, each a pure function tested against its formula."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


# exercise: similarity_loss — Pearson's r of two 1-D tensors, differentiable. hint: clamp the norms' product at eps
def pearson(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of two 1-D tensors, differentiable."""
    xc, yc = x - x.mean(), y - y.mean()
    return (xc * yc).sum() / (xc.norm() * yc.norm()).clamp_min(eps)


# exercise: similarity_loss — MSE, plus (1 − Pearson r) for "mse+corr"; a ValueError naming any other kind
def similarity_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Regression loss on the 0–1 scale. "mse"; or "mse+corr": MSE + (1 − Pearson r) over the batch, which
    rewards getting the ranking right, as the STS metric (Pearson) does."""
    loss = F.mse_loss(pred, target)
    if kind == "mse+corr":
        loss = loss + (1.0 - pearson(pred, target))
    elif kind != "mse":
        raise ValueError(f"similarity loss must be 'mse' or 'mse+corr', got {kind!r}")
    return loss


# ---- contrastive losses (the DAE → contrastive → fine-tune phases and contrastive adversarial training) ----

def cosine_mse_loss(u: torch.Tensor, v: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Siamese pair loss of López-Ávila & Suárez-Paniagua (2024, eq. 3), SBERT's CosineSimilarityLoss:
    mean over pairs of (label − cos(u, v))², label 1 for a same-class pair and 0 otherwise. u, v (B, C); same (B,)."""
    return F.mse_loss(F.cosine_similarity(u, v, dim=-1), same.to(u.dtype))


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over 2N views (SimCLR's NT-Xent), as in contrastive adversarial training (Pan et al. 2022).

    z1[i] and z2[i] (N, d) are two views of example i (clean and adversarial). Each of the 2N vectors is an
    anchor whose positive is its other view and whose negatives are the other 2N − 2 vectors:
        ℓ_i = −log exp(s(i, i⁺)/τ) / Σ_{k≠i} exp(s(i, k)/τ),   s = cosine similarity,   L = mean over the 2N anchors.
    """
    N = z1.size(0)
    z = F.normalize(torch.cat([z1, z2]), dim=-1)  # (2N, d)
    sim = (z @ z.T) / temperature  # (2N, 2N)
    sim = sim.masked_fill(torch.eye(2 * N, dtype=torch.bool, device=z.device), float("-inf"))  # k ≠ i
    positive = torch.cat([torch.arange(N, 2 * N), torch.arange(0, N)]).to(z.device)  # i ↔ i + N
    return F.cross_entropy(sim, positive)


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out, eq. 2) over a batch of labelled vectors.

    For each anchor i, A(i) is every other vector of the batch and P(i) those with i's label:
        ℓ_i = −1/|P(i)| Σ_{p∈P(i)} log exp(z_i·z_p/τ) / Σ_{a∈A(i)} exp(z_i·z_a/τ),   z = features / ‖features‖.
    The mean is over the anchors that have at least one positive (0 when none has). features (B, d); labels (B,).
    """
    B = features.size(0)
    z = F.normalize(features, dim=-1)
    sim = (z @ z.T) / temperature  # (B, B)
    self_mask = torch.eye(B, dtype=torch.bool, device=z.device)
    log_prob = sim - torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)  # (B, B)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask  # (B, B)
    count = positives.sum(1)  # |P(i)|
    has = count > 0
    if not has.any():
        return features.sum() * 0.0  # no positive pair in the batch: nothing to pull together
    per_anchor = -(log_prob * positives).sum(1)[has] / count[has]
    return per_anchor.mean()


def cat_loss(ce_clean: torch.Tensor, ce_adv: torch.Tensor, contrastive: torch.Tensor, lam: float) -> torch.Tensor:
    """Contrastive adversarial training's total (Pan et al. 2022): (1 − λ)/2 · (CE_clean + CE_adv) + λ · L_con."""
    return (1.0 - lam) / 2.0 * (ce_clean + ce_adv) + lam * contrastive


# ---- in-batch negatives (paraphrase) and R-Drop's consistency term -----------------------------------------

def mnrl_loss(a: torch.Tensor, b: torch.Tensor, scale: float = 20.0, symmetric: bool = False,
              exclude: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MultipleNegativesRankingLoss (sentence-transformers; InfoNCE with the batch's other b as negatives).

    a, b (N, C): the two sentences of N duplicate pairs. S = scale · cos(a_i, b_j) (N, N); the loss is the
    cross-entropy of each row with its diagonal as the target, ℓ_i = −log exp(S_ii) / Σ_j exp(S_ij), mean over i.
    `symmetric` averages it with the same over the columns (each b_j against every a). `exclude` (N, N) bool
    drops off-diagonal entries that are not negatives (the same question twice in one batch).
    """
    sim = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # (N, N)
    if exclude is not None:
        if exclude.diagonal().any():
            raise ValueError("mnrl_loss: the diagonal (the positives) cannot be excluded")
        sim = sim.masked_fill(exclude, float("-inf"))
    target = torch.arange(sim.size(0), device=sim.device)
    loss = F.cross_entropy(sim, target)
    return (loss + F.cross_entropy(sim.T, target)) / 2 if symmetric else loss


def symmetric_kl(logits_1: torch.Tensor, logits_2: torch.Tensor) -> torch.Tensor:
    """½ (KL(p₁‖p₂) + KL(p₂‖p₁)), p = softmax over the last dim; summed over classes, mean over the rest.
    It equals ½ Σ_c (p₁ − p₂)(log p₁ − log p₂), the form computed here."""
    lp1, lp2 = F.log_softmax(logits_1, dim=-1), F.log_softmax(logits_2, dim=-1)
    return 0.5 * ((lp1.exp() - lp2.exp()) * (lp1 - lp2)).sum(-1).mean()


OUTPUT_KINDS = ("categorical", "bernoulli", "regression")


def rdrop_consistency(out_1: torch.Tensor, out_2: torch.Tensor, kind: str) -> torch.Tensor:
    """R-Drop's term between two dropout passes (Liang et al. 2021): the symmetric KL of the predictive
    distributions; "categorical": softmax over the last dim; "bernoulli": each logit z is the distribution
    (σ(z), 1 − σ(z)); "regression": no distribution, the MSE between the two outputs."""
    if kind == "categorical":
        return symmetric_kl(out_1, out_2)
    if kind == "bernoulli":  # softmax over (z, 0) is (σ(z), σ(−z))
        return symmetric_kl(torch.stack([out_1, torch.zeros_like(out_1)], -1),
                            torch.stack([out_2, torch.zeros_like(out_2)], -1))
    if kind == "regression":
        return F.mse_loss(out_1, out_2)
    raise ValueError(f"output kind must be one of {OUTPUT_KINDS}, got {kind!r}")
