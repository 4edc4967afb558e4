"""The ablation runner: plain fine-tuning against each technique, on the same budget, over several seeds.

    python tasks/ablate.py --task sst --epochs 1 --max_examples 2000 --out_dir runs/ablate-sst-cpu   # 2-core CPU
    python tasks/ablate.py --task sst --epochs 3 --seeds 1 2 3 4 5 --use_gpu --out_dir runs/ablate-sst-gpu
    python tasks/ablate.py --techniques plain cat child_d dae+cat --resume    # add cells to a finished grid

Techniques: plain, dae (TSDAE phase), mlm (MLM phase), contrastive (cosine-MSE phase), supcon, 3phase
(DAE → contrastive → fine-tune), cat (contrastive adversarial training), child_f, child_d; 'a+b' combines.

Every cell (technique × seed) is one in-process call of the classifier's code path (`tasks.run.run`) with
the same data, fine-tuning epochs, batch size and learning rate; only the technique's flags differ. The
phases (DAE, contrastive) are extra passes over the same training data: they are not counted in --epochs
but listed in the table's "extra epochs" column, and every cell's wall time is measured, so the cost of a
technique is visible beside its score. Writes, under --out_dir, as soon as each cell finishes:

    results.jsonl   one line per finished cell (what --resume reads)
    table.md        mean ± sample standard deviation of the dev metric per technique, Δ against plain
    table.csv       the same numbers, unformatted
    chart.png       bars with ±1 sd error bars
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import List, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable, not this folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from tasks import classifier  # noqa: E402
from tasks.data import get_task  # noqa: E402
from tasks.run import REPO, run, task_files  # noqa: E402

# name: (phases before fine-tuning, extra flags, what it is)
TECHNIQUES = {
    "plain": ((), (), "plain fine-tuning"),
    "dae": (("dae",), (), "TSDAE phase, then fine-tuning"),
    "mlm": (("dae",), ("--dae_objective", "mlm"), "MLM phase, then fine-tuning"),
    "contrastive": (("contrastive",), (), "Siamese cosine-MSE phase (imbalance-corrected), then fine-tuning"),
    "supcon": (("contrastive",), ("--contrastive_loss", "supcon"), "SupCon phase, then fine-tuning"),
    "3phase": (("dae", "contrastive"), (), "DAE → contrastive → fine-tune"),
    "cat": ((), ("--adversarial",), "contrastive adversarial training"),
    "child_f": ((), ("--child_tuning", "F"), "Child-Tuning-F"),
    "child_d": ((), ("--child_tuning", "D"), "Child-Tuning-D"),
}
DEFAULT_TECHNIQUES = ("plain", "dae", "contrastive", "3phase", "cat", "child_f", "child_d")


def technique_args(name: str):
    """(phases, flags, description) of a technique or of a combination 'a+b' (phases merged, flags joined)."""
    parts = name.split("+")
    unknown = [p for p in parts if p not in TECHNIQUES]
    if unknown:
        raise ValueError(f"unknown technique {unknown[0]!r}; known: {', '.join(TECHNIQUES)} (combine with +)")
    phases = tuple(p for p in ("dae", "contrastive") if any(p in TECHNIQUES[t][0] for t in parts))
    flags = [f for t in parts for f in TECHNIQUES[t][1]]
    names = [f for f in flags if f.startswith("--")]
    if len(names) != len(set(names)) or ("dae" in parts and "mlm" in parts):
        raise ValueError(f"{name!r} combines techniques that set the same option")
    return phases, tuple(flags), " + ".join(TECHNIQUES[t][2] for t in parts)


def summarize(records: Sequence[dict], order: Sequence[str]) -> List[dict]:
    """One row per technique: n, mean and sample sd (ddof=1) of the score, Δ mean against 'plain', mean wall time."""
    rows = []
    base = [r["score"] for r in records if r["technique"] == "plain"]
    for name in order:
        scores = [r["score"] for r in records if r["technique"] == name]
        if not scores:
            continue
        mine = [r for r in records if r["technique"] == name]
        rows.append({"technique": name, "n": len(scores), "mean": float(np.mean(scores)),
                     "sd": float(np.std(scores, ddof=1)) if len(scores) > 1 else float("nan"),
                     "delta": float(np.mean(scores) - np.mean(base)) if base else float("nan"),
                     "extra_epochs": mine[0]["extra_epochs"], "wall_seconds": float(np.mean([r["wall_seconds"] for r in mine]))})
    return rows


def write_tables(rows: List[dict], out_dir: Path, metric: str, header: str) -> None:
    if not rows:
        return
    with open(out_dir / "table.csv", "w", encoding="utf-8") as f:
        f.write(f"technique,seeds,mean_{metric},sd_{metric},delta_vs_plain,extra_epochs,wall_seconds_per_run\n")
        for r in rows:
            f.write(f"{r['technique']},{r['n']},{r['mean']:.6f},{r['sd']:.6f},{r['delta']:.6f},{r['extra_epochs']},"
                    f"{r['wall_seconds']:.1f}\n")
    lines = [header, "", f"| technique | what | seeds | dev {metric} (mean ± sd) | Δ vs plain | extra epochs | wall s / run |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['technique']} | {technique_args(r['technique'])[2]} | {r['n']} | {r['mean']:.4f} ± {r['sd']:.4f} | "
                     f"{r['delta']:+.4f} | {r['extra_epochs']} | {r['wall_seconds']:.1f} |")
    (out_dir / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1.2 * len(rows) + 2, 4))
    x = np.arange(len(rows))
    ax.bar(x, [r["mean"] for r in rows], yerr=[0 if np.isnan(r["sd"]) else r["sd"] for r in rows], capsize=4,
           color=["#888888" if r["technique"] == "plain" else "#4477aa" for r in rows])
    plain = [r["mean"] for r in rows if r["technique"] == "plain"]
    if plain:
        ax.axhline(plain[0], color="#888888", linestyle="--", linewidth=1)
    lows = [r["mean"] - (0 if np.isnan(r["sd"]) else r["sd"]) for r in rows]
    highs = [r["mean"] + (0 if np.isnan(r["sd"]) else r["sd"]) for r in rows]
    span = max(highs) - min(lows) or 0.01
    ax.set_ylim(max(0.0, min(lows) - span), max(highs) + 0.5 * span)
    ax.set_xticks(x, [r["technique"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel(f"dev {metric} (mean ± sd, n = {max(r['n'] for r in rows)})")
    fig.tight_layout()
    fig.savefig(out_dir / "chart.png", dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", choices=classifier.TASKS, default="sst")
    p.add_argument("--techniques", nargs="+", default=list(DEFAULT_TECHNIQUES),
                   help=f"names from {', '.join(TECHNIQUES)}; 'a+b' combines two")
    p.add_argument("--seeds", nargs="+", type=int, default=[11711, 11712, 11713])
    p.add_argument("--model", default=None, help="checkpoint (default: the embedded all-MiniLM-L6-v2)")
    p.add_argument("--data_dir", default=str(REPO / "data"))
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs, the same for every technique")
    p.add_argument("--max_examples", type=int, default=None, help="a fixed random N examples of each split (quick runs)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4, help="encoder learning rate (as tasks/multitask.py)")
    p.add_argument("--head_lr", type=float, default=1e-3, help="heads' learning rate (as tasks/multitask.py)")
    p.add_argument("--dae_epochs", type=int, default=1)
    p.add_argument("--contrastive_epochs", type=int, default=1)
    p.add_argument("--use_gpu", action="store_true")
    p.add_argument("--extra", default="", help="more classifier flags for every cell, e.g. \"--max_length 64\"")
    p.add_argument("--out_dir", default="runs/ablate")
    p.add_argument("--resume", action="store_true", help="skip finished cells; continue an interrupted one")
    p.add_argument("--keep_checkpoints", action="store_true", help="keep each cell's .pt files (large)")
    args = p.parse_args(argv)
    for name in args.techniques:
        technique_args(name)  # fail now, not hours into the grid
    if len(set(args.seeds)) < 3:
        p.error(f"use at least 3 distinct seeds for a mean ± sd, got {args.seeds}")
    return args


def cell_argv(args, technique: str, seed: int, cell_dir: Path) -> List[str]:
    """The classifier flags of one cell: the shared budget, the seed, then the technique's own flags."""
    phases, flags, _ = technique_args(technique)
    argv = ["--tasks", args.task, "--data_dir", args.data_dir, "--epochs", str(args.epochs),
            "--batch_size", str(args.batch_size), "--lr", str(args.lr), "--head_lr", str(args.head_lr),
            "--seed", str(seed), "--out_dir", str(cell_dir), "--predictions_dir", str(cell_dir / "predictions"),
            "--no-predict_test", "--phases", ",".join(phases + ("finetune",)),
            "--dae_epochs", str(args.dae_epochs), "--contrastive_epochs", str(args.contrastive_epochs)]
    argv += ["--model", args.model] if args.model else []
    argv += ["--max_examples", str(args.max_examples)] if args.max_examples else []
    argv += (["--use_gpu"] if args.use_gpu else []) + (["--resume"] if args.resume else [])
    return argv + shlex.split(args.extra) + list(flags)


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_file = out_dir / "results.jsonl"
    budget = {k: getattr(args, k) for k in ("task", "model", "epochs", "max_examples", "batch_size", "lr", "head_lr",
                                            "dae_epochs", "contrastive_epochs", "extra")}
    records = [json.loads(line) for line in results_file.read_text().splitlines()] if results_file.is_file() else []
    if records and not args.resume:
        sys.exit(f"{results_file} already holds {len(records)} cells: pass --resume to continue it, or a new --out_dir")
    if any(r["budget"] != budget for r in records):
        sys.exit(f"{results_file} was made with another budget ({records[0]['budget']}); use a new --out_dir")
    done = {(r["technique"], r["seed"]) for r in records}
    cells = [(t, s) for s in args.seeds for t in args.techniques]
    metric = get_task(args.task).metric
    command = "python tasks/ablate.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))

    bar = tqdm(cells, desc="ablation grid", dynamic_ncols=True, position=0)
    for technique, seed in bar:
        bar.set_postfix(cell=f"{technique}/seed {seed}")
        if (technique, seed) in done:
            continue
        cell_dir = out_dir / f"{technique}-seed{seed}"
        cell_args = classifier.parse_args(cell_argv(args, technique, seed, cell_dir))
        tqdm.write(f"=== {technique}, seed {seed} ===")
        t0 = time.time()
        scores = run(cell_args, [args.task], {args.task: task_files(cell_args, args.task, args.task)})
        phases = technique_args(technique)[0]
        record = {"technique": technique, "seed": seed, "score": scores[args.task], "metric": metric,
                  "wall_seconds": round(time.time() - t0, 1), "finetune_epochs": args.epochs,
                  "extra_epochs": sum(getattr(args, f"{p}_epochs") for p in phases), "budget": budget}
        with open(results_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        records.append(record)
        if not args.keep_checkpoints:
            for path in cell_dir.rglob("*.pt"):
                path.unlink()
        gc.collect()
        rows = summarize(records, list(dict.fromkeys(["plain", *args.techniques])))
        write_tables(rows, out_dir, metric, f"Ablation on {args.task} (dev {metric}); command: `{command}`")

    rows = summarize(records, list(dict.fromkeys(["plain", *args.techniques])))
    wall = time.time() - started
    sample = f", a fixed random {args.max_examples} examples per split" if args.max_examples else ""
    header = (f"Ablation on {args.task} (dev {metric}), {len(args.seeds)} seeds, {args.epochs} fine-tuning epoch(s)"
              f"{sample}; this invocation took {wall / 60:.1f} min.\n\nCommand: `{command}`")
    write_tables(rows, out_dir, metric, header)
    print((out_dir / "table.md").read_text())
    print(f"wrote {out_dir / 'table.md'}, {out_dir / 'table.csv'}, {out_dir / 'chart.png'} ({wall / 60:.1f} min)")
    return rows


if __name__ == "__main__":
    main()
