"""The three pictures of issue #5, with matplotlib's file-only Agg backend (no display needed).

- `plot_curves`: one run's dev accuracy and the two players' losses per epoch, from its metrics.jsonl;
- `plot_study`: dev accuracy against the labelled fraction, one line per method, a panel per amount of
  unlabelled data, mean ± standard deviation over seeds;
- `plot_unlabeled`: the frozen-encoder study at one labelled fraction: dev accuracy, the paired difference
  against plain, and the fakes' probe and diversity numbers, against the amount of unlabelled data;
- `plot_embeddings`: real and generated embeddings on the real ones' first two principal axes, by class.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from tasks.plot_metrics import read_epochs  # noqa: E402  (the loop's metrics.jsonl, the same reader)

METHOD_STYLE = {"plain": ("plain classifier", "tab:gray", "o"), "ganbert": ("GAN-BERT", "tab:blue", "s"),
                "acganbert": ("AC-GAN-BERT", "tab:red", "^")}

CLASS_COLORS = {2: ["#2166ac", "#b2182b"], 3: ["#2166ac", "#4d4d4d", "#b2182b"],  # diverging, as sentiment is
                5: ["#2166ac", "#67a9cf", "#4d4d4d", "#ef8a62", "#b2182b"]}


def plot_curves(metrics_path, png_path) -> Path:
    records = read_epochs(metrics_path)
    epochs = [r["epoch"] for r in records]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_acc.plot(epochs, [r["dev"]["score"] for r in records], "o-")
    ax_acc.set(xlabel="epoch", ylabel="dev accuracy", title="dev accuracy")
    for key in ("d", "g", "d_sup", "aux"):
        if records and key in records[0]["train_loss"]:
            ax_loss.plot(epochs, [r["train_loss"][key] for r in records], "o-", label=key)
    ax_loss.set(xlabel="epoch", ylabel="mean training loss", title="losses")
    ax_loss.legend()
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return Path(png_path)


def plot_study(rows: Sequence[Dict], png_path, title: str = "") -> Path:
    """rows: dicts with method, labeled_fraction, unlabeled_fraction, dev_accuracy (one per seed).

    A cell at labelled fraction 1 has no unlabelled data, so it is drawn in every panel.
    """
    panels = sorted({float(r["unlabeled_fraction"]) for r in rows if float(r["labeled_fraction"]) < 1}) or [0.0]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), sharey=True, squeeze=False)
    for ax, u in zip(axes[0], panels):
        groups: Dict[str, Dict[float, List[float]]] = defaultdict(lambda: defaultdict(list))
        for r in rows:
            f = float(r["labeled_fraction"])
            if f >= 1 or float(r["unlabeled_fraction"]) == u:
                groups[r["method"]][f].append(float(r["dev_accuracy"]))
        for method in [m for m in METHOD_STYLE if m in groups] + [m for m in groups if m not in METHOD_STYLE]:
            label, color, marker = METHOD_STYLE.get(method, (method, None, "o"))
            xs = sorted(groups[method])
            mean = np.array([np.mean(groups[method][x]) for x in xs])
            std = np.array([np.std(groups[method][x]) for x in xs])
            seeds = max(len(groups[method][x]) for x in xs)
            ax.plot(xs, mean, marker=marker, color=color, label=f"{label} (n={seeds})")
            ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.15)
        ax.set_xscale("log")
        ticks = sorted({float(r["labeled_fraction"]) for r in rows})
        ax.set_xticks(ticks, [f"{t:.0%}" if t >= 0.01 else f"{t:.1%}" for t in ticks])
        ax.minorticks_off()
        ax.set(xlabel="labelled fraction of the training set", title=f"unlabelled: {u:.0%} of the rest")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best")
    axes[0][0].set_ylabel("dev accuracy (mean ± std over seeds)")
    return _save(fig, png_path, title)


def plot_unlabeled(rows: Sequence[Dict], summary: Sequence[Dict], png_path, title: str = "") -> Path:
    """rows: one per seed and cell (results.jsonl); summary: gan.stats.summarize's rows. The first labelled
    fraction only. "plain" ran once (unlabelled 0) and is drawn as a band across every amount."""
    f0 = min(float(r["labeled_fraction"]) for r in rows)
    rows = [r for r in rows if float(r["labeled_fraction"]) == f0]
    summary = [s for s in summary if s["labeled_fraction"] == f0]
    us = sorted({float(r["unlabeled_fraction"]) for r in rows if r["method"] != "plain"}) or [0.0]
    pos = {u: i for i, u in enumerate(us)}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    (ax_acc, ax_diff), (ax_probe, ax_div) = axes
    for s in summary:
        if s["method"] == "plain":
            m, sd = s["mean_dev_accuracy"], s["sd_dev_accuracy"]
            ax_acc.axhline(m, color="tab:gray", label=f"plain classifier (n={s['seeds']})")
            ax_acc.axhspan(m - sd, m + sd, color="tab:gray", alpha=0.15)
    for method in ("ganbert", "acganbert"):
        label, color, marker = METHOD_STYLE[method]
        cells = sorted((s for s in summary if s["method"] == method), key=lambda s: s["unlabeled_fraction"])
        if not cells:
            continue
        x = np.array([pos[s["unlabeled_fraction"]] for s in cells], dtype=float) + (0.06 if method == "acganbert" else -0.06)
        ax_acc.errorbar(x, [s["mean_dev_accuracy"] for s in cells], [s["sd_dev_accuracy"] for s in cells], marker=marker,
                        color=color, capsize=3, label=f"{label} (n={cells[0]['seeds']})")
        seeds = [(pos[float(r["unlabeled_fraction"])], float(r["dev_accuracy"])) for r in rows if r["method"] == method]
        ax_acc.scatter([a + (x[0] - pos[cells[0]["unlabeled_fraction"]]) for a, _ in seeds], [b for _, b in seeds],
                       s=8, color=color, alpha=0.35)
        if "diff_mean" in cells[0]:
            mean = np.array([s["diff_mean"] for s in cells])
            err = np.array([[s["diff_mean"] - s["diff_lo"] for s in cells], [s["diff_hi"] - s["diff_mean"] for s in cells]])
            ax_diff.errorbar(x, mean, err, marker=marker, color=color, capsize=3, label=label)
        if method == "acganbert" and "probe_acc" in cells[0]:
            ax_probe.plot(x, [s["probe_acc"] for s in cells], marker=marker, color=color, label="linear probe (real subspace)")
            ax_probe.plot(x, [s["centroid_acc"] for s in cells], marker=marker, color=color, ls="--",
                          label="nearest real class centroid")
        spread_label = "within-class spread" if method == "acganbert" else "spread"
        ax_div.plot(x, [s.get("spread", np.nan) for s in cells], marker=marker, color=color, label=f"{label}: {spread_label}")
        cov = "class_coverage" if method == "acganbert" else "coverage"
        ax_div.plot(x, [s.get(cov, np.nan) for s in cells], marker=marker, color=color, ls="--",
                    label=f"{label}: {cov.replace('_', ' ')}")
    ax_diff.axhline(0, color="tab:gray", lw=1)
    chance = next((s["chance"] for s in summary if "chance" in s), None)
    if chance is not None:
        ax_probe.axhline(chance, color="tab:gray", lw=1, ls=":", label="chance")
    ax_div.axhline(1, color="tab:gray", lw=1, ls=":", label="real data (≈ 1)")
    names = {"acc": "dev accuracy (mean ± sd; dots: seeds)", "diff": "GAN − plain, paired over seeds (95% CI)",
             "probe": "AC-GAN-BERT fakes read by their label", "div": "fakes' diversity vs real"}
    for ax, key in ((ax_acc, "acc"), (ax_diff, "diff"), (ax_probe, "probe"), (ax_div, "div")):
        ax.set_xticks(range(len(us)), [f"{u:.0%}" for u in us])
        ax.set(xlabel=f"unlabelled data: share of the rest ({f0:.0%} labelled)", title=names[key])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    ax_probe.set_ylim(0, 1.02)
    ax_div.set_ylim(0, 1.1)
    return _save(fig, png_path, title)


def plot_embeddings(real_xy: np.ndarray, real_labels: np.ndarray, fake_xy: np.ndarray, fake_labels: np.ndarray,
                    class_names: Sequence[str], png_path, title: str = "") -> Path:
    """Two panels on the same axes: real embeddings by gold class, generated ones by conditioning class."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharex=True, sharey=True)
    colors = CLASS_COLORS.get(len(class_names)) or plt.get_cmap("tab10").colors
    for ax, xy, labels, what in ((axes[0], real_xy, real_labels, "real (dev), by gold label"),
                                 (axes[1], fake_xy, fake_labels, "generated, by conditioning label")):
        for c, name in enumerate(class_names):
            pts = xy[labels == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=8, alpha=0.6, color=colors[c], label=name)
        ax.set(title=what, xlabel="PC 1 (of the real embeddings)")
        ax.legend(markerscale=2, fontsize=8)
    axes[0].set_ylabel("PC 2")
    return _save(fig, png_path, title)


def _save(fig, png_path, title: str = "") -> Path:
    import matplotlib.pyplot as plt
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return Path(png_path)
