"""Tools to look at embeddings: PCA to 2-D, a linear probe, and a spread ratio that exposes mode collapse.

The question they answer: do the generator's fakes for class y look like real embeddings of class y?
A probe trained on real embeddings only is asked to classify the fakes; if it recovers their conditioning
labels well above chance, the fakes cluster by class. If G had collapsed to a few points, the spread ratio
(the fakes' within-class variance over the real within-class variance) would be near 0.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F


def pca(x: torch.Tensor, k: int = 2) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mean (C,), components (k, C)): the top-k principal axes of x (N, C), unit length, by decreasing variance."""
    if x.dim() != 2 or x.size(0) < 2:
        raise ValueError(f"pca needs a (N >= 2, C) matrix, got shape {tuple(x.shape)}")
    x = x.double()
    mean = x.mean(0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)  # rows of vh: principal axes
    components = vh[:k]
    sign = torch.sign(components.gather(1, components.abs().argmax(1, keepdim=True)))  # fix each axis's sign
    return mean, components * sign


def project(x: torch.Tensor, mean: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N, k) coordinates on the principal axes."""
    return (x.double() - mean) @ components.T


class LinearProbe:
    """Multinomial logistic regression on standardised features, fitted by full-batch L-BFGS."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        self.mean, self.std, self.weight, self.bias = mean, std, weight, bias

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - self.mean) / self.std) @ self.weight.T + self.bias  # (N, k)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).argmax(-1)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(x) == y.to(self.mean.device)).double().mean())


def fit_linear_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float = 1e-3,
                     steps: int = 200) -> LinearProbe:
    """Minimise mean cross-entropy + weight_decay · |W|² on (x (N, C), y (N,)); deterministic (starts at zero)."""
    x = x.detach().double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    z = (x - mean) / std
    W = torch.zeros(num_classes, x.size(1), dtype=torch.double, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.double, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ W.T + b, y) + weight_decay * W.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LinearProbe(mean, std, W.detach(), b.detach())


def spread_ratio(real: torch.Tensor, real_labels: torch.Tensor, fake: torch.Tensor, fake_labels: torch.Tensor) -> float:
    """Mean over classes of tr Cov(fake of class y) / tr Cov(real of class y); ≈ 0 means mode collapse."""
    ratios = []
    for c in torch.unique(fake_labels):
        r, f = real[real_labels == c].double(), fake[fake_labels == c].double()
        if len(r) > 1 and len(f) > 1:
            ratios.append(float(f.var(0).sum() / r.var(0).sum().clamp_min(1e-12)))
    return sum(ratios) / len(ratios) if ratios else float("nan")
