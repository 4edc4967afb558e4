"""Optimisation, written out by hand and tested against references: AdamW, learning-rate schedules,
PCGrad gradient surgery and Child-Tuning gradient masks."""
from .adamw import AdamW, is_no_decay, param_groups_no_decay
from .pcgrad import PCGrad, pcgrad, project_conflicting
from .schedules import SCHEDULES, constant, cosine, linear_warmup_decay, make_scheduler

__all__ = [
    "AdamW", "is_no_decay", "param_groups_no_decay",
    "SCHEDULES", "constant", "cosine", "linear_warmup_decay", "make_scheduler",
    "PCGrad", "pcgrad", "project_conflicting",
]
