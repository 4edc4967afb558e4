"""Plot a run's metrics.jsonl: dev scores and training losses per evaluation (each epoch, or every --eval_every steps).

    python tasks/plot_metrics.py runs/multitask/metrics.jsonl            # writes runs/multitask/metrics.png

A run with --pcgrad gets a third panel: per pair of tasks, the share of the steps they shared in which their
gradients conflicted (what PCGrad projects away).
"""
import argparse
import json
from pathlib import Path


def read_epochs(path):
    """The per-epoch records of a metrics.jsonl (the final summary line is left out)."""
    with open(path, encoding="utf-8") as f:
        return [r for r in map(json.loads, filter(str.strip, f)) if "epoch" in r]


def plot(records, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # x: the optimizer step where the loop recorded it (several evaluations an epoch with --eval_every), else the epoch
    by_step = all("step" in r for r in records)
    x = [r["step"] if by_step else r["epoch"] for r in records]
    scores = [k for k, v in records[0]["dev"].items() if isinstance(v, (int, float))]  # not the GAN's "fakes" block
    names = list(dict.fromkeys(scores + list(records[0]["train_loss"])))
    color = {name: f"C{i}" for i, name in enumerate(names)}  # one colour per task in both panels
    pairs = list(dict.fromkeys(k for r in records for k in r.get("pcgrad", {}).get("pairs", {})))
    fig, axes = plt.subplots(1, 3 if pairs else 2, figsize=(15 if pairs else 10, 4))
    dev, train = axes[0], axes[1]
    xlabel = "optimizer step" if by_step else "epoch"
    for key in scores:
        dev.plot(x, [r["dev"][key] for r in records], marker="o", label=key, color=color[key])
    dev.set(title="dev", xlabel=xlabel, ylabel="score")
    for key in records[0]["train_loss"]:
        train.plot(x, [r["train_loss"][key] for r in records], marker="o", label=key, color=color[key])
    train.set(title="training loss (mean since the last evaluation)", xlabel=xlabel, yscale="log")
    for pair in pairs:  # a pair that shared no step since an evaluation has no point there
        seen = [(xi, r["pcgrad"]["pairs"][pair]["conflicting"]) for xi, r in zip(x, records)
                if pair in r.get("pcgrad", {}).get("pairs", {})]
        axes[2].plot(*zip(*seen), marker="o", label=pair)
    if pairs:
        axes[2].set(title="PCGrad: share of shared steps in conflict", xlabel=xlabel, ylim=(0, 1))
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", help="a metrics.jsonl written by the training loop")
    parser.add_argument("--out", default=None, help="PNG path (default: next to the metrics file)")
    args = parser.parse_args(argv)
    records = read_epochs(args.metrics)
    if not records:
        raise SystemExit(f"{args.metrics} has no per-epoch records")
    out = args.out or str(Path(args.metrics).with_suffix(".png"))
    plot(records, out)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
