"""Scores, the overall score of the coursework, prediction files and the final table."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, Mapping, Sequence

import numpy as np


def accuracy(pred: Sequence, gold: Sequence) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean()) if len(gold) else float("nan")


def pearson_r(pred: Sequence[float], gold: Sequence[float]) -> float:
    if len(gold) < 2 or np.std(pred) == 0 or np.std(gold) == 0:
        return 0.0  # undefined correlation (constant predictions): score it as no correlation
    from scipy.stats import pearsonr  # here, not at the top: scipy.stats takes as long to import as torch
    return float(pearsonr(np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64))[0])


def spearman_r(pred: Sequence[float], gold: Sequence[float]) -> float:
    """Rank correlation (scipy): how well the order of the pairs is predicted, whatever the scale."""
    if len(gold) < 2 or np.std(pred) == 0 or np.std(gold) == 0:
        return 0.0
    from scipy.stats import spearmanr
    return float(spearmanr(np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64))[0])


def overall_score(scores: Mapping[str, float]) -> float:
    """The coursework's (sst + para + (sts + 1) / 2) / 3: the mean over tasks, STS's r mapped to [0, 1].
    With a subset of tasks, the mean over those present."""
    parts = [(scores[t] + 1) / 2 if t == "sts" else scores[t] for t in scores]
    return float(np.mean(parts)) if parts else float("nan")


PREDICTION_HEADERS = {"sst": "Predicted_Sentiment", "cfimdb": "Predicted_Sentiment",
                      "para": "Predicted_Is_Paraphrase", "sts": "Predicted_Similarity"}


def write_predictions(path, task: str, ids: Sequence[str], preds: Sequence) -> None:
    """`id,Predicted_*` CSV, one row per input id, in input order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", PREDICTION_HEADERS[task]])
        for i, p in zip(ids, preds):
            writer.writerow([i, f"{p:.4f}" if isinstance(p, float) else p])


def format_table(rows: Dict[str, Dict[str, float]]) -> str:
    """A small aligned text table: rows[name][column] -> value."""
    columns = list(dict.fromkeys(c for r in rows.values() for c in r))
    lines = [" | ".join([f"{'':<10}"] + [f"{c:>10}" for c in columns])]
    for name, r in rows.items():
        lines.append(" | ".join([f"{name:<10}"] + [f"{r[c]:>10.4f}" if c in r else f"{'':>10}" for c in columns]))
    return "\n".join(lines)
