"""Summaries over seeds: mean ± sd, and the paired 95% interval of an arm's difference against a baseline.

Seeds pair the runs: within a seed two arms share the data order and the initial heads, so the per-seed
difference removes what they share; its t interval mean ± t(0.975, n − 1) · sd / √n is what decides whether a
technique helps (the interval above 0), harms (below 0), or cannot be told from the baseline (it holds 0).
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np
from scipy.stats import t as student_t


def mean_sd(values: Sequence[float]):
    """(mean, sample standard deviation (n − 1; 0 for one value))."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def paired_interval(a: Dict[int, float], b: Dict[int, float], level: float = 0.95) -> dict:
    """a − b over the seeds both have ({seed: value}): mean, sd, and the t interval (lo, hi); nan below 2 seeds."""
    seeds = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in seeds]
    if len(d) < 2:
        return {"n": len(d), "mean": d[0] if d else math.nan, "sd": math.nan, "lo": math.nan, "hi": math.nan}
    mean, sd = mean_sd(d)
    half = student_t.ppf(0.5 + level / 2, len(d) - 1) * sd / math.sqrt(len(d))
    return {"n": len(d), "mean": mean, "sd": sd, "lo": mean - half, "hi": mean + half}


def verdict(interval: dict) -> str:
    """helps / harms when the interval excludes 0, else "no difference shown"."""
    if not interval["lo"] <= interval["hi"]:  # nan: fewer than two paired seeds
        return "too few seeds"
    return "helps" if interval["lo"] > 0 else "harms" if interval["hi"] < 0 else "no difference shown"
