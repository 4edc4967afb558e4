"""Plot a run's metrics.jsonl: dev scores and training losses per epoch.

    python tasks/plot_metrics.py runs/multitask/metrics.jsonl            # writes runs/multitask/metrics.png
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

    epochs = [r["epoch"] for r in records]
    names = list(dict.fromkeys(list(records[0]["dev"]) + list(records[0]["train_loss"])))
    color = {name: f"C{i}" for i, name in enumerate(names)}  # one colour per task in both panels
    fig, (dev, train) = plt.subplots(1, 2, figsize=(10, 4))
    for key in records[0]["dev"]:
        dev.plot(epochs, [r["dev"][key] for r in records], marker="o", label=key, color=color[key])
    dev.set(title="dev", xlabel="epoch", ylabel="score")
    for key in records[0]["train_loss"]:
        train.plot(epochs, [r["train_loss"][key] for r in records], marker="o", label=key, color=color[key])
    train.set(title="training loss (mean per batch)", xlabel="epoch", yscale="log")
    for ax in (dev, train):
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
