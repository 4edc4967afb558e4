"""Summaries over seeds: mean ± sd, and the paired 95% interval of an arm's difference against a baseline.

Seeds pair the runs: within a seed two arms share the data order and the initial heads, so the per-seed
difference removes what they share; its t interval mean ± t(0.975, n − 1) · sd / √n is what decides whether a
technique helps (the interval above 0), harms (below 0), or cannot be told from the baseline (it holds 0).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Hashable, List, Optional, Sequence

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


def compare(records: Sequence[dict], arm: Callable[[dict], Hashable], metrics: Dict[str, Callable[[dict], float]],
            baseline: Callable[[Hashable], Optional[Hashable]], seed: Callable[[dict], int] = lambda r: r["seed"],
            order: Optional[Sequence[Hashable]] = None) -> List[dict]:
    """Every study's summary: the records grouped by arm(record), and per arm n, each metric's mean and sd over
    seeds, the per-seed differences against the arm baseline(arm) names over the seeds both have, their mean Δ
    (None: no baseline or no seed in common; the baseline's own Δ is 0), and the paired interval of the first
    metric with its verdict. Δ is over the shared seeds, like the interval: while a grid is unfinished an arm's
    mean and its baseline's can cover different seeds, and their difference is then not the paired one.
    Arms come in `order` (those with no records left out), then any others in the order they were first seen."""
    groups: Dict[Hashable, List[dict]] = {}
    for r in records:
        groups.setdefault(arm(r), []).append(r)
    keys = [a for a in (order or []) if a in groups] + [a for a in groups if a not in (order or [])]
    first = next(iter(metrics))
    rows = []
    for key in keys:
        mine = groups[key]
        values = {m: [f(r) for r in mine] for m, f in metrics.items()}
        row = {"arm": key, "n": len(mine), "records": mine,
               "mean": {m: float(np.mean(v)) for m, v in values.items()},
               "sd": {m: mean_sd(v)[1] if len(v) > 1 else math.nan for m, v in values.items()},
               "delta": None, "diffs": None, "paired": paired_interval({}, {}), "verdict": ""}
        base_key = baseline(key)
        base = groups.get(base_key) if base_key is not None else None
        if base_key == key:
            row["delta"] = {m: 0.0 for m in metrics}
        elif base:
            by_seed = {seed(r): r for r in base}
            pairs = [(r, by_seed[seed(r)]) for r in mine if seed(r) in by_seed]
            row["diffs"] = {m: [f(a) - f(b) for a, b in pairs] for m, f in metrics.items()}
            if pairs:
                row["delta"] = {m: float(np.mean(d)) for m, d in row["diffs"].items()}
            row["paired"] = paired_interval({seed(r): metrics[first](r) for r in mine},
                                            {s: metrics[first](r) for s, r in by_seed.items()})
            row["verdict"] = verdict(row["paired"])
        rows.append(row)
    return rows
