"""Do the generator's fakes for class y look like real embeddings of class y? Measured in the real data's space.

The first probe here standardised every raw dimension and fitted a logistic regression. all-MiniLM-L6-v2
has three (near-)constant output dimensions (127, 223, 319): dividing by their ≈0 std turned any fake's
small offset there into a huge feature, and those three values decided the probe's answer. Every measure
now runs in `RealSpace`: dimensions that are near-constant in the real data are dropped, the rest are
standardised, and the points are projected onto the real data's principal subspace. A fake's values along
directions the real data does not vary in cannot reach the answer.

`fake_probe(model, real_embeddings, real_labels)` gives, in one dict, per epoch if wanted:
- probe_acc: a linear probe trained on real embeddings reads the fakes' conditioning labels (chance 1/k);
- centroid_acc: the same read by the nearest real class centroid (no fitted weights to exploit);
- off_subspace: the share of the fakes' squared distance from the real mean that lies outside the subspace
  (off_subspace_real: the same for the real points; higher for fakes means they leave the real data's span);
- fake_class_entropy: entropy of the probe's predicted classes over the fakes / log k (0: all one class);
- spread, coverage, class_coverage, precision: gan/diversity.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .diversity import diversity, knn_radii


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
    """Minimise mean cross-entropy + weight_decay · |W|² on (x (N, C), y (N,)); deterministic (starts at zero).
    Sound on features that all vary (RealSpace coordinates); on raw embeddings see the module's docstring."""
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


@dataclass
class RealSpace:
    """x (N, C) -> (N, d): keep the varying dimensions, standardise them, project on the real principal axes."""
    keep: torch.Tensor  # (C,) bool
    mean: torch.Tensor  # (C_keep,)
    std: torch.Tensor  # (C_keep,)
    components: torch.Tensor  # (d, C_keep)

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.double()[:, self.keep] - self.mean) / self.std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardise(x) @ self.components.T

    def off_subspace(self, x: torch.Tensor) -> float:
        """Share of Σ|standardised x|² that lies outside the principal subspace."""
        z = self.standardise(x)
        total = z.pow(2).sum()
        return float((total - (z @ self.components.T).pow(2).sum()) / total.clamp_min(1e-12))


def fit_real_space(real: torch.Tensor, var_share: float = 0.9, max_dims: int = 64,
                   rel_std_floor: float = 1e-3) -> RealSpace:
    """Drop dimensions whose std is under rel_std_floor × the median std; keep the fewest principal axes of
    the standardised rest that explain var_share of its variance (at most max_dims)."""
    x = real.detach().double()
    std = x.std(0)
    keep = std > rel_std_floor * std.median()
    mean, std = x[:, keep].mean(0), std[keep]
    z = (x[:, keep] - mean) / std
    _, s, vh = torch.linalg.svd(z, full_matrices=False)
    share = (s ** 2).cumsum(0) / (s ** 2).sum()
    d = min(max_dims, int((share < var_share).sum()) + 1)
    return RealSpace(keep, mean, std, vh[:d])


@dataclass
class FakeReference:
    """Everything fake_probe needs from the real data, fitted once (the real embeddings of a frozen encoder
    do not change between epochs)."""
    space: RealSpace
    probe: LinearProbe
    centroids: torch.Tensor  # (k, d)
    real: torch.Tensor  # (n, d): a random subsample for the k-NN measures
    real_labels: torch.Tensor  # (n,)
    radii: torch.Tensor  # (n,)
    num_classes: int
    off_subspace_real: float  # the real points' own share outside the subspace, to read the fakes' against


def fit_reference(real: torch.Tensor, labels: torch.Tensor, num_classes: int, knn_points: int = 1000,
                  k: int = 5, seed: int = 0) -> FakeReference:
    space = fit_real_space(real)
    z = space(real)
    centroids = torch.stack([z[labels == c].mean(0) for c in range(num_classes)])
    pick = torch.randperm(len(z), generator=torch.Generator().manual_seed(seed))[:knn_points]
    return FakeReference(space, fit_linear_probe(z, labels, num_classes), centroids, z[pick], labels[pick],
                         knn_radii(z[pick], k), num_classes, space.off_subspace(real))


def nearest_centroid(z: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The index of the nearest centroid; a class without real points (a nan centroid) is never nearest."""
    return torch.cdist(z.double(), centroids.double()).nan_to_num(nan=math.inf).argmin(1)


def score_fakes(ref: FakeReference, fake: torch.Tensor, fake_labels: Optional[torch.Tensor]) -> dict:
    """The measures of the module docstring for given fakes (N, C) and their conditioning labels (or None)."""
    z = ref.space(fake)
    pred = ref.probe.predict(z)
    counts = torch.bincount(pred, minlength=ref.num_classes).double()
    p = counts[counts > 0] / counts.sum()
    out = {"chance": 1 / ref.num_classes, "off_subspace": ref.space.off_subspace(fake),
           "off_subspace_real": ref.off_subspace_real,
           "fake_class_entropy": float(-(p * p.log()).sum() / math.log(ref.num_classes)) + 0.0}  # + 0.0: no -0.0
    if fake_labels is not None:
        out["probe_acc"] = float((pred == fake_labels).double().mean())
        out["centroid_acc"] = float((nearest_centroid(z, ref.centroids) == fake_labels).double().mean())
    out.update(diversity(ref.real, ref.real_labels, ref.radii, z, fake_labels))
    return out


@torch.no_grad()
def fake_probe(model, real_embeddings: torch.Tensor, real_labels: torch.Tensor, per_class: Optional[int] = None,
               seed: int = 0, reference: Optional[FakeReference] = None) -> dict:
    """Probe and diversity numbers for a GAN's generator against real embeddings (N, C) with gold labels (N,).

    Draws per_class fakes per class (balanced, so chance is exactly 1/k; default: as many fakes as the
    reference's k-NN subsample), in eval mode, with a fixed seed. Pass `reference` (fit_reference) to fit
    the real side once. A model without a generator ("plain") gives {}.
    """
    if getattr(model, "generator", None) is None:
        return {}
    k = model.num_labels
    ref = reference or fit_reference(real_embeddings, real_labels, k)
    per_class = per_class or max(1, len(ref.real) // k)
    was_training = model.training
    model.eval()
    device = next(model.generator.parameters()).device
    labels = torch.arange(k, device=device).repeat_interleave(per_class)
    fake, _ = model.generate(len(labels), labels, device=device, rng=torch.Generator(device=device).manual_seed(seed))
    model.train(was_training)
    return score_fakes(ref, fake.float().cpu(), labels.cpu() if model.config.conditional else None)
