"""Losses beyond torch's built-ins, each a pure function tested against its formula."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pearson(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of two 1-D tensors, differentiable."""
    xc, yc = x - x.mean(), y - y.mean()
    return (xc * yc).sum() / (xc.norm() * yc.norm()).clamp_min(eps)


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
