"""The GAN study's summary over seeds: mean ± sd, and the paired 95% interval of a method's difference against
the baseline (tasks/studies/stats.py). Within a seed, every method of a cell shares the labelled rows, D's initial weights and the batches of
labelled rows, so the per-seed difference removes what the seeds share; its t interval
mean ± t(0.975, n − 1) · sd / √n is much narrower than the two methods' own spreads suggest.
"""
from __future__ import annotations

import math
import numpy as np

from tasks.studies.stats import compare


FAKE_COLUMNS = ["chance", "probe_acc", "centroid_acc", "spread", "coverage", "class_coverage", "precision", "off_subspace",
                "off_subspace_real", "fake_class_entropy"]


def _float(x):
    return float(x) if x not in ("", None) else math.nan


def compared(rows, baseline: str = "plain", baseline_any_unlabeled: bool = False):
    """stats.compare's rows, one per (method, labelled, unlabelled) cell, each paired with `baseline` at the same
    amounts of data (or, baseline_any_unlabeled, at the same labelled fraction and unlabelled 0)."""
    cell = lambda r: (r["method"], float(r["labeled_fraction"]), float(r["unlabeled_fraction"]))  # noqa: E731
    cells = {cell(r) for r in rows}

    def base_of(arm):
        _, f, u = arm
        if (baseline, f, u) in cells:
            return (baseline, f, u)
        return (baseline, f, 0.0) if baseline_any_unlabeled and (baseline, f, 0.0) in cells else None

    order = {"plain": 0, "ganbert": 1, "acganbert": 2}
    arms = sorted(cells, key=lambda a: (a[1], a[2], order.get(a[0], 9)))
    return compare(rows, arm=cell, metrics={"dev_accuracy": lambda r: float(r["dev_accuracy"])}, baseline=base_of,
                   seed=lambda r: int(r["seed"]), order=arms)


def summarize(rows, baseline: str = "plain", baseline_any_unlabeled: bool = False):
    """Per (method, labelled, unlabelled) cell: seeds, mean ± sd of the dev accuracy, the paired difference
    against `baseline` over seeds (diff_mean, diff_lo, diff_hi), and the mean of each fake measure present.
    baseline_any_unlabeled: the baseline ran once per labelled fraction (at unlabelled 0) and serves every
    unlabelled amount (the frozen mode's "plain")."""
    out = []
    for c in compared(rows, baseline, baseline_any_unlabeled):
        (method, f, u), by_seed = c["arm"], {int(r["seed"]): r for r in c["records"]}
        row = {"method": method, "labeled_fraction": f, "unlabeled_fraction": u, "seeds": len(by_seed),
               "mean_dev_accuracy": round(c["mean"]["dev_accuracy"], 4),
               "sd_dev_accuracy": round(c["sd"]["dev_accuracy"] if c["n"] > 1 else 0.0, 4)}
        if c["diffs"] is not None:
            p = c["paired"]
            row.update(diff_mean=round(p["mean"], 4), diff_lo=round(p["lo"], 4), diff_hi=round(p["hi"], 4))
        for col in FAKE_COLUMNS:
            values = [_float(r.get(col)) for r in by_seed.values()]
            values = [v for v in values if v == v]
            if values:
                row[col] = round(float(np.mean(values)), 4)
        out.append(row)
    return out
