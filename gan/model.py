"""GAN-BERT and AC-GAN-BERT: a generator of fake sentence embeddings and a (k + 1)-way discriminator.

    real sentence ─► BERT ─► pooled embedding (B, C) ─┐
                                                       ├─► D: MLP ─► features (2B, H) ─► logits (2B, k + 1)
    z ~ U(0, 1) (B, noise) [⊕ one-hot y] ─► G: MLP ─► fake (B, C)

D classifies real embeddings into the k classes and tells them from G's fakes ("fake" is the last logit);
the encoder is fine-tuned by D's loss. In GAN-BERT (Croce et al. 2020) G sees noise only; in AC-GAN-BERT
G also gets a class y, and both players are trained so that D reads y back off G(z, y) (Odena et al. 2017).
"plain" is D alone on the labelled rows: the same encoder and classifier, without the GAN, as a baseline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from tasks.domain.model import MultitaskBert
from tasks.engine.config import flag

from .losses import VARIANTS, gan_losses


G_SCHEDULES = ("constant", "linear")


@dataclass(frozen=True)
class GanConfig:
    method: str = flag("acganbert", "plain: D alone on the labelled rows; ganbert: G from noise; acganbert: G from "
                                    "noise and a class", choices=VARIANTS)
    noise_dim: int = flag(100, "size of G's noise vector z")
    g_layers: int = flag(1, "hidden layers of G")
    d_layers: int = flag(1, "hidden layers of D")
    g_hidden: int = flag(0, "width of G's hidden layers (0: the encoder's hidden size)")
    d_hidden: int = flag(0, "width of D's hidden layers (0: the encoder's hidden size)")
    gan_dropout: float = flag(0.1, "dropout in G and D")
    aux_weight: float = flag(1.0, "AC-GAN-BERT's auxiliary class term, in both players' losses")
    feature_matching_weight: float = flag(1.0, "weight of G's feature-matching term")
    # G's own optimiser (GAN practice, not BERT's fine-tuning schedule): AdamW(lr=g_lr, betas=(g_beta1, 0.999))
    g_lr: Optional[float] = flag(1e-4, "G's learning rate", unset="D's head learning rate (--head_lr, else --lr)")
    g_beta1: float = flag(0.5, "β₁ of G's AdamW")
    g_schedule: str = flag("constant", "G's schedule: constant, or linear (warmup, then decay to 0 at the last step)",
                           choices=G_SCHEDULES)

    def __post_init__(self):
        if self.method not in VARIANTS:
            raise ValueError(f"method must be one of {VARIANTS}, got {self.method!r}")
        if self.noise_dim < 1:
            raise ValueError(f"noise_dim must be >= 1, got {self.noise_dim}")
        for name in ("g_layers", "d_layers", "g_hidden", "d_hidden"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.gan_dropout < 1.0:
            raise ValueError(f"gan_dropout must be in [0, 1), got {self.gan_dropout}")
        if self.aux_weight < 0 or self.feature_matching_weight < 0:
            raise ValueError("aux_weight and feature_matching_weight must be >= 0")
        if self.g_lr is not None and self.g_lr <= 0:
            raise ValueError(f"g_lr must be > 0, got {self.g_lr}")
        if not 0.0 <= self.g_beta1 < 1.0:
            raise ValueError(f"g_beta1 must be in [0, 1), got {self.g_beta1}")
        if self.g_schedule not in G_SCHEDULES:
            raise ValueError(f"g_schedule must be one of {G_SCHEDULES}, got {self.g_schedule!r}")

    @property
    def conditional(self) -> bool:
        return self.method == "acganbert"


def mlp(dims: Sequence[int], dropout: float) -> nn.Sequential:
    """Linear → LeakyReLU(0.2) → Dropout for each consecutive pair of widths, as in GAN-BERT."""
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """G(z[, y]) -> a fake sentence embedding (B, C). Conditional when num_labels > 0.

    The label enters as a one-hot vector concatenated to z; through G's first linear layer that is the
    same as adding a learned label embedding to the first pre-activation.
    """

    def __init__(self, noise_dim: int, out_dim: int, num_labels: int = 0, hidden: Sequence[int] = (), dropout: float = 0.1):
        super().__init__()
        self.noise_dim, self.num_labels = noise_dim, num_labels
        dims = [noise_dim + num_labels, *hidden]
        self.body = mlp(dims, dropout)
        self.out = nn.Linear(dims[-1], out_dim)

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.num_labels:
            if labels is None:
                raise ValueError("a conditional generator needs labels")
            z = torch.cat([z, F.one_hot(labels, self.num_labels).to(z.dtype)], dim=-1)  # (B, noise + k)
        return self.out(self.body(z))  # (B, C)


class Discriminator(nn.Module):
    """Embeddings (B, C) -> (features (B, H), logits (B, k + 1)); features are the last hidden layer."""

    def __init__(self, in_dim: int, num_labels: int, hidden: Sequence[int] = (), dropout: float = 0.1):
        super().__init__()
        self.num_labels = num_labels
        self.input_drop = nn.Dropout(dropout)
        self.body = mlp([in_dim, *hidden], dropout)
        self.out = nn.Linear(hidden[-1] if hidden else in_dim, num_labels + 1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h = self.body(self.input_drop(x))  # (B, H)
        return h, self.out(h)  # (B, H), (B, k + 1)


class EmbeddingGan(nn.Module):
    """D and G over embeddings handed over in the batch (`batch["embeddings"]`, (B, C)).

    On its own it is the toy problem of the tests (Gaussian classes standing in for BERT embeddings);
    `GanBert` below is the same with the embeddings computed by a fine-tuned encoder.
    """

    def __init__(self, hidden_size: int, num_labels: int, config: GanConfig = GanConfig()):
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"num_labels must be >= 2, got {num_labels}")
        self.config, self.num_labels, self.hidden_size = config, num_labels, hidden_size
        d_width, g_width = config.d_hidden or hidden_size, config.g_hidden or hidden_size
        self.discriminator = Discriminator(hidden_size, num_labels, [d_width] * config.d_layers, config.gan_dropout)
        self.generator = None
        if config.method != "plain":
            self.generator = Generator(config.noise_dim, hidden_size, num_labels if config.conditional else 0,
                                       [g_width] * config.g_layers, config.gan_dropout)

    def embed_batch(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["embeddings"]  # (B, C)

    def generate(self, n: int, labels: Optional[torch.Tensor] = None, device=None,
                 rng: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """n fake embeddings (n, C) and their conditioning labels (uniform over the k classes unless given)."""
        if self.generator is None:
            raise ValueError("method 'plain' has no generator")
        device = device or next(self.generator.parameters()).device
        z = torch.rand(n, self.config.noise_dim, device=device, generator=rng)  # (n, noise), U(0, 1) as in GAN-BERT
        if self.config.conditional and labels is None:
            labels = torch.randint(self.num_labels, (n,), device=device, generator=rng)
        return self.generator(z, labels if self.config.conditional else None), labels

    def losses(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """One forward of D over the real rows and as many fakes; every loss term, and the totals "d" and "g"."""
        real = self.embed_batch(batch)  # (B, C)
        labels, mask = batch["labels"], batch["label_mask"]
        cfg = self.config
        if self.generator is None:
            features, logits = self.discriminator(real)
            return gan_losses(features, logits, labels, mask, variant="plain")
        B = real.size(0)
        fake, fake_labels = self.generate(B, device=real.device)  # (B, C)
        features, logits = self.discriminator(torch.cat([real, fake.to(real.dtype)]))  # (2B, H), (2B, k + 1)
        return gan_losses(features[:B], logits[:B], labels, mask, features[B:], logits[B:], fake_labels,
                          variant=cfg.method, aux_weight=cfg.aux_weight,
                          feature_matching_weight=cfg.feature_matching_weight)

    def sentiment_logits(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, k): D's class logits without "fake", the classifier's prediction (as GAN-BERT predicts)."""
        return self.discriminator(self.embed_batch(batch))[1][:, :-1]


class GanBert(EmbeddingGan):
    """The GAN over a BERT's pooled sentence embedding (MultitaskBert.embed); the encoder trains with D."""

    def __init__(self, encoder: nn.Module, num_labels: int, config: GanConfig = GanConfig(), pooling: str = "mean"):
        super().__init__(encoder.config.hidden_size, num_labels, config)
        self.encoder = MultitaskBert(encoder, tasks=(), pooling=pooling)  # no heads: encoder + pooling only

    def embed_batch(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))  # (B, C)
