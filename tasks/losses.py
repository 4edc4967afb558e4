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
