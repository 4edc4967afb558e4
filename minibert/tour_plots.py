"""The tour's pictures (minibert/tour.py): labelled heatmaps of attention maps and other small matrices.

Each drawing function returns what matplotlib holds for its images (`drawn`), so the tests check the picture
itself against the model's tensors, not a copy of our own.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import torch


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no window: works on a server
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path: Path) -> None:
    if fig.get_layout_engine() is None:  # the grid lays itself out (constrained: it has a shared colour bar)
        fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")  # "tight": grown to hold every label, none cut off
    plt.close(fig)


def heatmap(ax, m: torch.Tensor, xlabels, ylabels, fontsize, vmin=0.0, vmax=1.0, cmap="viridis", numbers=0.0):
    """One labelled matrix (its values written in at `numbers` points, if nonzero); returns the image."""
    im = ax.imshow(m.numpy(), vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks(range(len(xlabels)), xlabels, rotation=90 if max(map(len, xlabels)) > 3 else 0, fontsize=fontsize)
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=fontsize)
    for (r, c), value in np.ndenumerate(m.numpy()) if numbers else ():
        frac = (value - vmin) / (vmax - vmin)
        dark = abs(frac - 0.5) > 0.35 if cmap in ("RdBu_r", "coolwarm") else frac < 0.6
        text = f"{value:.2f}".replace("-0.00", "0.00")
        ax.text(c, r, text, ha="center", va="center", fontsize=numbers, color="w" if dark else "k")
    return im


def drawn(im) -> torch.Tensor:
    """What matplotlib holds for an image: the tests check this, not our own copy."""
    return torch.as_tensor(np.ma.getdata(im.get_array()))


GRID_FONT = 9.0  # points: a token label on the grid is about 12 pixels high at the 100 dpi of `_save`


def grid_size(T: int, fontsize: float = GRID_FONT) -> float:
    """Inches per attention map: each of its T rows (and columns) holds one label of `fontsize` points."""
    return max(1.5, T * fontsize * 1.3 / 72)


def draw_grid(att: torch.Tensor, tokens: List[str], path: Path, title: str) -> torch.Tensor:
    """Every layer × head map: rows are layers, columns heads; in each map row = query, column = key. The maps
    grow with the tokens so that the labels keep one size (GRID_FONT), and one colour bar gives the scale."""
    plt = _pyplot()
    L, nh, T, _ = att.shape
    cell = grid_size(T)
    fig, axes = plt.subplots(L, nh, figsize=(cell * nh + 2.5, cell * L + 2.0), squeeze=False, sharex=True, sharey=True,
                             layout="constrained")
    images = [[heatmap(axes[l][h], att[l, h], tokens, tokens, GRID_FONT) for h in range(nh)] for l in range(L)]
    for l in range(L):
        axes[l][0].set_ylabel(f"layer {l}", fontsize=14)
    for h in range(nh):
        axes[0][h].set_title(f"head {h}", fontsize=14)
    for ax in axes.flat:
        ax.label_outer()
    bar = fig.colorbar(images[0][0], ax=axes, shrink=min(1.0, 6 / L), aspect=40, pad=0.01)
    bar.set_label("attention probability (each row sums to 1)", fontsize=14)
    bar.ax.tick_params(labelsize=12)
    fig.suptitle(f"{title}: attention of every layer and head\nin each map, row: the query token (looking), "
                 "column: the key token (looked at)", fontsize=18)
    _save(plt, fig, path)
    return torch.stack([torch.stack([drawn(im) for im in row]) for row in images])  # (L, nh, T, T)


def draw_panels(path: Path, panels, xlabels, ylabels, cell: float, xlabel="", ylabel="") -> List[torch.Tensor]:
    """Matrices side by side, each (matrix, title, cmap, (vmin, vmax)), large, with numbers and a colour bar."""
    plt = _pyplot()
    nx, ny = len(xlabels), len(ylabels)
    width = cell * nx + 1.8 + 0.07 * max(map(len, ylabels))  # room for the labels and the colour bar
    height = cell * ny + 1.4 + 0.07 * max(map(len, xlabels))
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), height), squeeze=False)
    images = []
    for ax, (m, title, cmap, (lo, hi)) in zip(axes[0], panels):
        numbers = min(11.0, cell * 72 * 0.3) if max(nx, ny) <= 24 else 0.0
        images.append(heatmap(ax, m, xlabels, ylabels, 10, lo, hi, cmap, numbers))
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.set_title(title, fontsize=11)
        fig.colorbar(images[-1], ax=ax, fraction=0.046, pad=0.04)
    _save(plt, fig, path)
    return [drawn(im) for im in images]
