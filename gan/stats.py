"""The GAN study's summary over seeds: mean ± sd, and the paired 95% interval of a method's difference against
the baseline (tasks/stats.py). Within a seed, every method of a cell shares the labelled rows, D's initial weights and the batches of
labelled rows, so the per-seed difference removes what the seeds share; its t interval
mean ± t(0.975, n − 1) · sd / √n is much narrower than the two methods' own spreads suggest.
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np

from tasks.stats import mean_sd, paired_interval  # noqa: F401  (re-exported: the GAN study's tables use them)


FAKE_COLUMNS = ["chance", "probe_acc", "centroid_acc", "spread", "coverage", "class_coverage", "precision", "off_subspace",
                "off_subspace_real", "fake_class_entropy"]


def _float(x):
    return float(x) if x not in ("", None) else math.nan


def summarize(rows, baseline: str = "plain", baseline_any_unlabeled: bool = False):
    """Per (method, labelled, unlabelled) cell: seeds, mean ± sd of the dev accuracy, the paired difference
    against `baseline` over seeds (diff_mean, diff_lo, diff_hi), and the mean of each fake measure present.
    baseline_any_unlabeled: the baseline ran once per labelled fraction (at unlabelled 0) and serves every
    unlabelled amount (the frozen mode's "plain")."""
    groups: Dict[tuple, Dict[int, dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], float(r["labeled_fraction"]), float(r["unlabeled_fraction"])), {})[int(r["seed"])] = r
    order = {"plain": 0, "ganbert": 1, "acganbert": 2}
    out = []
    for (method, f, u), by_seed in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2], order.get(kv[0][0], 9))):
        acc = {s: float(r["dev_accuracy"]) for s, r in by_seed.items()}
        mean, sd = mean_sd(list(acc.values()))
        row = {"method": method, "labeled_fraction": f, "unlabeled_fraction": u, "seeds": len(acc),
               "mean_dev_accuracy": round(mean, 4), "sd_dev_accuracy": round(sd, 4)}
        base = groups.get((baseline, f, u)) or (groups.get((baseline, f, 0.0)) if baseline_any_unlabeled else None)
        if method != baseline and base:
            d = paired_interval(acc, {s: float(r["dev_accuracy"]) for s, r in base.items()})
            row.update(diff_mean=round(d["mean"], 4), diff_lo=round(d["lo"], 4), diff_hi=round(d["hi"], 4))
        for c in FAKE_COLUMNS:
            values = [_float(r.get(c)) for r in by_seed.values()]
            values = [v for v in values if v == v]
            if values:
                row[c] = round(float(np.mean(values)), 4)
        out.append(row)
    return out
