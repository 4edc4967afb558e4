"""Optimisation, written out by hand and tested against references: AdamW, learning-rate schedules,
PCGrad gradient surgery and Child-Tuning gradient masks."""
from .adamw import AdamW, is_no_decay, param_groups_no_decay
from .child_tuning import (ChildTuningD, ChildTuningF, child_tuning_f, empirical_fisher, fisher_mask,
                           is_encoder_layer, make_child_tuning, top_fraction_mask)
from .pcgrad import PCGrad, pairwise_cosines, pcgrad, project_conflicting
from .schedules import SCHEDULES, constant, cosine, linear_warmup_decay, make_scheduler

__all__ = [
    "AdamW", "is_no_decay", "param_groups_no_decay",
    "SCHEDULES", "constant", "cosine", "linear_warmup_decay", "make_scheduler",
    "PCGrad", "pairwise_cosines", "pcgrad", "project_conflicting",
    "ChildTuningD", "ChildTuningF", "child_tuning_f", "empirical_fisher", "fisher_mask", "is_encoder_layer",
    "make_child_tuning", "top_fraction_mask",
]
