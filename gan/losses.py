"""The loss terms of GAN-BERT and AC-GAN-BERT, each a pure function of the discriminator's outputs.

The discriminator D scores a sentence embedding with k + 1 logits: k classes, then "fake" (the last column).
With p_fake = softmax(logits)[:, -1]:

    D: supervised     − mean over labelled real rows of log softmax(logits[:, :k])[y]
       real           − mean log(1 − p_fake(real))             every real row, labelled or not
       fake           − mean log p_fake(G(z))
       auxiliary      − mean log softmax(logits_fake[:, :k])[y_fake]       (AC-GAN-BERT only)
    G: adversarial    − mean log(1 − p_fake(G(z)))             fool D
       feature match  mean over features of (mean_real f − mean_fake f)²   (D's last hidden layer)
       auxiliary      the same term as D's: G is rewarded when D reads y_fake off G(z, y_fake)

These are the formulas of GAN-BERT's reference code (Croce et al. 2020), which adds ε = 1e-8 inside each
log; here log p_fake and log(1 − p_fake) come from logsumexp, which is exact and stable, so there is no ε.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

VARIANTS = ("plain", "ganbert", "acganbert")


def fake_log_probs(logits: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """log p_fake and log(1 − p_fake) from (B, k + 1) logits, each (B,)."""
    logits = logits.float()
    log_z = torch.logsumexp(logits, dim=-1)  # (B,)
    return logits[:, -1] - log_z, torch.logsumexp(logits[:, :-1], dim=-1) - log_z


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the k class logits, averaged over the labelled rows only; 0 when there are none."""
    if not bool(label_mask.any()):
        return logits.float().sum() * 0.0  # keeps the graph (and the device) without a gradient
    class_logits = logits[label_mask][:, :-1].float()  # (L, k)
    return F.cross_entropy(class_logits, labels[label_mask])


def discriminator_real_loss(real_logits: torch.Tensor) -> torch.Tensor:
    """−mean log(1 − p_fake): D should call every real embedding real."""
    return -fake_log_probs(real_logits)[1].mean()


def discriminator_fake_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """−mean log p_fake: D should call every generated embedding fake."""
    return -fake_log_probs(fake_logits)[0].mean()


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """−mean log(1 − p_fake(G(z))): G wants D to call its output real."""
    return -fake_log_probs(fake_logits)[1].mean()


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Squared distance between the batch means of D's last hidden layer, averaged over features (Salimans 2016)."""
    return (real_features.float().mean(0) - fake_features.float().mean(0)).pow(2).mean()


def auxiliary_class_loss(fake_logits: torch.Tensor, fake_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between D's class prediction on G(z, y) and y, over the k class logits (AC-GAN)."""
    return F.cross_entropy(fake_logits[:, :-1].float(), fake_labels)


def gan_losses(real_features: torch.Tensor, real_logits: torch.Tensor, labels: torch.Tensor,
               label_mask: torch.Tensor, fake_features: Optional[torch.Tensor] = None,
               fake_logits: Optional[torch.Tensor] = None, fake_labels: Optional[torch.Tensor] = None,
               variant: str = "acganbert", aux_weight: float = 1.0,
               feature_matching_weight: float = 1.0) -> Dict[str, torch.Tensor]:
    """Every term, plus the two totals "d" (for D and the encoder) and "g" (for G; absent for "plain").

    The totals are sums of terms; which parameters each total may update is the trainer's business.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    terms = {"d_sup": supervised_loss(real_logits, labels, label_mask)}
    if variant == "plain":
        terms["d"] = terms["d_sup"]
        return terms
    if fake_logits is None or fake_features is None:
        raise ValueError(f"variant {variant!r} needs the discriminator's outputs on generated embeddings")
    terms["d_real"] = discriminator_real_loss(real_logits)
    terms["d_fake"] = discriminator_fake_loss(fake_logits)
    terms["g_adv"] = generator_adversarial_loss(fake_logits)
    terms["g_feat"] = feature_matching_loss(real_features, fake_features)
    d = terms["d_sup"] + terms["d_real"] + terms["d_fake"]
    g = terms["g_adv"] + feature_matching_weight * terms["g_feat"]
    if variant == "acganbert":
        if fake_labels is None:
            raise ValueError("variant 'acganbert' needs the generator's conditioning labels (fake_labels)")
        terms["aux"] = auxiliary_class_loss(fake_logits, fake_labels)
        d = d + aux_weight * terms["aux"]
        g = g + aux_weight * terms["aux"]
    terms["d"], terms["g"] = d, g
    return terms
