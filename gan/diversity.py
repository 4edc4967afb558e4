"""Is G diverse? Within-class spread, coverage and precision of fakes against real embeddings.

All take points already mapped into the real data's space (gan/probe.py's `RealSpace`), where every
direction is one the real embeddings vary in; in raw coordinates a near-constant dimension could decide them.

- spread: the fakes' variance over the real variance (per class when G is conditional) — ≈ 0 is collapse;
- coverage (Naeem et al. 2020): the share of real points whose k-NN ball (radius: the distance to their k-th
  nearest real neighbour) holds at least one fake — low when G covers only part of the real data;
- precision (Kynkäänniemi et al. 2019): the share of fakes inside some real point's k-NN ball — low when
  the fakes lie off the real data.
Fakes drawn from the real distribution, as many as the real points, score ≈ 1 on all three.
"""
from __future__ import annotations

from typing import Optional

import torch


def spread_ratio(real: torch.Tensor, real_labels: torch.Tensor, fake: torch.Tensor, fake_labels: torch.Tensor) -> float:
    """Mean over classes of tr Cov(fake of class y) / tr Cov(real of class y); ≈ 0 means mode collapse."""
    ratios = []
    for c in torch.unique(fake_labels):
        r, f = real[real_labels == c].double(), fake[fake_labels == c].double()
        if len(r) > 1 and len(f) > 1:
            ratios.append(float(f.var(0).sum() / r.var(0).sum().clamp_min(1e-12)))
    return sum(ratios) / len(ratios) if ratios else float("nan")


def knn_radii(x: torch.Tensor, k: int = 5) -> torch.Tensor:
    """(N,): each point's distance to its k-th nearest other point."""
    if not 1 <= k < len(x):
        raise ValueError(f"k must be in [1, {len(x) - 1}] for {len(x)} points, got {k}")
    d = torch.cdist(x.double(), x.double())  # (N, N)
    return d.kthvalue(k + 1, dim=1).values  # the 1st smallest is the point itself (0)


def _inside(real: torch.Tensor, radii: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """(N_real, N_fake) bool: fake j lies within real point i's ball."""
    return torch.cdist(real.double(), fake.double()) <= radii.double()[:, None]


def coverage(real: torch.Tensor, radii: torch.Tensor, fake: torch.Tensor) -> float:
    """Share of real points (N, d) whose ball of radius radii (N,) holds at least one fake (M, d)."""
    if len(fake) == 0:
        return 0.0
    return float(_inside(real, radii, fake).any(1).double().mean())


def precision(real: torch.Tensor, radii: torch.Tensor, fake: torch.Tensor) -> float:
    """Share of fakes (M, d) inside at least one real point's ball."""
    return float(_inside(real, radii, fake).any(0).double().mean())


def class_coverage(real: torch.Tensor, real_labels: torch.Tensor, radii: torch.Tensor, fake: torch.Tensor,
                   fake_labels: torch.Tensor) -> float:
    """Coverage per class, real points of class y against fakes conditioned on y, averaged over classes."""
    scores = [coverage(real[real_labels == c], radii[real_labels == c], fake[fake_labels == c])
              for c in torch.unique(real_labels)]
    return sum(scores) / len(scores)


def diversity(real: torch.Tensor, real_labels: torch.Tensor, radii: torch.Tensor, fake: torch.Tensor,
              fake_labels: Optional[torch.Tensor] = None) -> dict:
    """The three measures; spread and coverage are per class when the fakes have conditioning labels."""
    out = {"coverage": coverage(real, radii, fake), "precision": precision(real, radii, fake)}
    if fake_labels is None:  # unconditional G: total variance, all classes together
        out["spread"] = spread_ratio(real, torch.zeros(len(real)), fake, torch.zeros(len(fake)))
    else:
        out["spread"] = spread_ratio(real, real_labels, fake, fake_labels)
        out["class_coverage"] = class_coverage(real, real_labels, radii, fake, fake_labels)
    return out
