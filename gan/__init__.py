"""GAN-BERT and AC-GAN-BERT: semi-supervised sentiment classification with a generator of fake sentence
embeddings (issue #5). Losses in gan/losses.py, models in gan/model.py, the two-player step in
gan/trainer.py, the data split in gan/data.py; CLIs gan/train.py, gan/study.py, gan/embeddings.py."""
from .data import (MaskedSentenceCollator, SemiSupervisedProcessor, labeled_split, replication_factor,
                   semi_supervised, unlabeled_subset)
from .losses import (VARIANTS, auxiliary_class_loss, discriminator_fake_loss, discriminator_real_loss,
                     fake_log_probs, feature_matching_loss, gan_losses, generator_adversarial_loss, supervised_loss)
from .model import Discriminator, EmbeddingGan, GanBert, GanConfig, Generator
from .diversity import spread_ratio
from .probe import LinearProbe, fit_linear_probe, pca, project
from .trainer import GanTrainer

__all__ = [
    "VARIANTS", "fake_log_probs", "supervised_loss", "discriminator_real_loss", "discriminator_fake_loss",
    "generator_adversarial_loss", "feature_matching_loss", "auxiliary_class_loss", "gan_losses",
    "GanConfig", "Generator", "Discriminator", "EmbeddingGan", "GanBert", "GanTrainer",
    "labeled_split", "unlabeled_subset", "replication_factor", "MaskedSentenceCollator", "SemiSupervisedProcessor",
    "semi_supervised", "pca", "project", "LinearProbe", "fit_linear_probe", "spread_ratio",
]
