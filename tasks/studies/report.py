"""A study's table and chart, from the rows of stats.compare: the same layout for every study.

The chart shows what a mean hides: for each arm, every seed's difference against its baseline (dots) on each
metric, their mean (bar), and the paired 95% interval of the deciding metric (whisker).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, List, Sequence

from ..engine.checkpointing import atomic_write_text


def markdown_table(header: str, columns: Sequence[str], rows: Sequence[Sequence[str]],
                   right: Sequence[bool] = ()) -> str:
    """`header`, a blank line, then a GitHub table; `right[i]` aligns column i to the right (numbers)."""
    align = ["---:" if i < len(right) and right[i] else "---" for i in range(len(columns))]
    lines = [header, ""] if header else []
    lines += ["| " + " | ".join(columns) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def interval_text(row: dict) -> str:
    p = row["paired"]
    return f"[{p['lo']:+.4f}, {p['hi']:+.4f}]" if p["lo"] <= p["hi"] else ""


def write_table(path, header: str, columns: Sequence[str], rows: Sequence[Sequence[str]],
                right: Sequence[bool] = ()) -> None:
    atomic_write_text(path, markdown_table(header, columns, rows, right))


def paired_chart(rows: List[dict], path, metrics: Sequence[str], labels: Sequence[str] = (),
                 title: Callable[[dict], str] = lambda row: str(row["arm"]), ylabel: str = "difference against the baseline"
                 ) -> bool:
    """One panel per arm that has seeds paired with its baseline; False (and no file) when there is none.
    `metrics` are the keys of the rows' per-seed differences; the first is the one the whisker and verdict are of."""
    arms = [r for r in rows if r["diffs"] and r["diffs"][metrics[0]]]
    if not arms:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = list(labels) or list(metrics)
    fig, axes = plt.subplots(1, len(arms), figsize=(1.0 + (0.8 * len(metrics) + 1.6) * len(arms), 3.6),
                             squeeze=False, sharey=True)
    for ax, row in zip(axes[0], arms):
        for x, key in enumerate(metrics):
            diffs = [d for d in row["diffs"][key] if not math.isnan(d)]
            if diffs:
                ax.bar(x, sum(diffs) / len(diffs), color="#4477aa" if x == 0 else "#aabbcc", width=0.6)
                ax.plot([x] * len(diffs), diffs, "o", color="#222222", markersize=3)
        p = row["paired"]
        if p["lo"] <= p["hi"]:
            ax.errorbar(0, p["mean"], yerr=[[p["mean"] - p["lo"]], [p["hi"] - p["mean"]]], color="#cc3311",
                        capsize=5, linewidth=1.5)
        ax.axhline(0, color="#888888", linewidth=1)
        ax.set_xticks(range(len(metrics)), labels, rotation=30, ha="right")
        n = len(row["diffs"][metrics[0]])
        ax.set_title(f"{title(row)} (n = {n})" + (f": {row['verdict']}" if row["verdict"] else ""), fontsize=9)
    axes[0][0].set_ylabel(ylabel)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
