"""The study of issue #5: dev accuracy against the labelled fraction, for the plain classifier, GAN-BERT and
AC-GAN-BERT, at several amounts of unlabelled data, over seeds — every cell on the same budget.

    python gan/study.py --use_gpu                                        # the full grid on SST-5
    python gan/study.py --fractions 0.01 0.05 0.1 1 --seeds 1 2 --unlabeled 1 --max_examples 2000 --epochs 2
    python gan/study.py --resume                                         # continue: finished cells are skipped

Within one (seed, labelled fraction, unlabelled fraction) the three methods share the labelled rows, the
initial weights and the number of optimizer steps (see gan/data.py). Flags this script does not know are
passed to every run (gan/train.py's flags: --lr, --batch_size, --model, --noise_dim, ...).
Writes, under --out_dir: results.csv (one row per finished cell, appended as it finishes), summary.csv
(mean and std over seeds), study-{task}.png, and cells/<cell>/ with each run's metrics.jsonl, log and plots.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable, not this folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from gan import train  # noqa: E402
from gan.losses import VARIANTS  # noqa: E402
from gan.plots import plot_study  # noqa: E402
from tasks.run import task_files  # noqa: E402

PASSTHROUGH = "Any other flag goes to every run of gan/train.py (see python gan/train.py --help)."
COLUMNS = ["task", "method", "labeled_fraction", "unlabeled_fraction", "seed", "labeled", "unlabeled", "replicate",
           "steps_per_epoch", "epochs", "best_epoch", "dev_accuracy", "wall_seconds"]
KEY = ("task", "method", "labeled_fraction", "unlabeled_fraction", "seed")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=PASSTHROUGH,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", choices=train.TASKS, default="sst")
    p.add_argument("--methods", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
                   help="labelled fractions")
    p.add_argument("--unlabeled", nargs="+", type=float, default=[0.1, 1.0],
                   help="unlabelled fractions (of the rows left unlabelled), one panel each")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2], help="one run per seed (data split and init)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run")
    p.add_argument("--max_examples", type=int, default=None, help="a fixed random N rows of each file (quick grids)")
    p.add_argument("--out_dir", default="runs/gan_study")
    p.add_argument("--resume", action="store_true", help="skip the cells already in results.csv")
    p.add_argument("--overwrite", action="store_true", help="start over, discarding an existing results.csv")
    p.add_argument("--keep_checkpoints", action="store_true", help="keep each cell's best.pt and last.pt")
    args, passthrough = p.parse_known_args(argv)
    if any(not 0 < f <= 1 for f in args.fractions):
        p.error(f"--fractions must be in (0, 1], got {args.fractions}")
    if any(not 0 <= u <= 1 for u in args.unlabeled):
        p.error(f"--unlabeled must be in [0, 1], got {args.unlabeled}")
    try:  # fail now, not an hour in, on a bad pass-through flag
        train.parse_args(cell_argv(args, passthrough, VARIANTS[0], 1.0, 1.0, 0, Path(args.out_dir)))
    except SystemExit:
        p.error(f"gan/train.py rejected the pass-through flags {passthrough} (see the message above)")
    return args, passthrough


def cell_argv(args, passthrough, method, fraction, unlabeled, seed, cell_dir):
    return [*passthrough, "--tasks", args.task, "--method", method, "--labeled_fraction", str(fraction),
            "--unlabeled_fraction", str(unlabeled), "--seed", str(seed), "--epochs", str(args.epochs),
            "--out_dir", str(cell_dir), "--predictions_dir", str(cell_dir / "predictions"),
            *(["--max_examples", str(args.max_examples)] if args.max_examples else [])]


def grid(args):
    """The cells, seeds outermost (a whole curve per seed comes first). At labelled fraction 1 nothing is left
    to be unlabelled, so that cell is run once (as unlabelled fraction 0) and drawn in every panel."""
    cells, seen = [], set()
    for seed in args.seeds:
        for u in args.unlabeled:
            for f in sorted(args.fractions):
                for method in args.methods:
                    key = (args.task, method, f, 0.0 if f >= 1 else u, seed)
                    if key not in seen:
                        seen.add(key)
                        cells.append(dict(zip(KEY, key)))
    return cells


def cell_name(cell) -> str:
    return "{task}-{method}-l{labeled_fraction:g}-u{unlabeled_fraction:g}-s{seed}".format(**cell)


def _key(row) -> tuple:
    return (row["task"], row["method"], float(row["labeled_fraction"]), float(row["unlabeled_fraction"]), int(row["seed"]))


def read_results(path):
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def summarize(rows):
    """Mean and std over seeds per (method, labelled, unlabelled) cell."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["method"], float(r["labeled_fraction"]), float(r["unlabeled_fraction"]))].append(float(r["dev_accuracy"]))
    return [{"method": m, "labeled_fraction": f, "unlabeled_fraction": u, "seeds": len(v),
             "mean_dev_accuracy": round(float(np.mean(v)), 4), "std_dev_accuracy": round(float(np.std(v)), 4)}
            for (m, f, u), v in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][1], VARIANTS.index(kv[0][0])
                                                                       if kv[0][0] in VARIANTS else 9))]


def main(argv=None):
    args, passthrough = parse_args(argv)
    out = Path(args.out_dir)
    results_path = out / "results.csv"
    if results_path.is_file() and not (args.resume or args.overwrite):
        sys.exit(f"{results_path} exists: pass --resume to continue it, or --overwrite to start over")
    if args.overwrite:
        results_path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    done = {_key(r) for r in read_results(results_path)}
    cells = grid(args)
    todo = [c for c in cells if _key(c) not in done]
    print(f"{len(cells)} cells, {len(cells) - len(todo)} already finished, {len(todo)} to run; results in {results_path}")
    if not results_path.is_file():
        with open(results_path, "w", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, COLUMNS).writeheader()

    bar = tqdm(todo, desc="grid", dynamic_ncols=True)
    for cell in bar:
        name = cell_name(cell)
        bar.set_description(f"grid: {name}")
        cell_dir = out / "cells" / name
        resume = args.resume and (cell_dir / "last.pt").is_file()  # an interrupted cell continues from its last epoch
        if cell_dir.exists() and not resume:
            shutil.rmtree(cell_dir)  # a stale partial run
        cell_dir.mkdir(parents=True, exist_ok=True)
        argv_cell = cell_argv(args, passthrough, cell["method"], cell["labeled_fraction"], cell["unlabeled_fraction"],
                              cell["seed"], cell_dir)
        cell_args = train.parse_args(argv_cell + (["--resume"] if resume else []))
        with open(cell_dir / "log.txt", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            result = train.run_gan(cell_args, args.task, task_files(cell_args, args.task, args.task), show_progress=False)
        row = {**cell, **{k: result[k] for k in COLUMNS if k in result}}
        with open(results_path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, COLUMNS).writerow(row)
        if not args.keep_checkpoints:
            for ckpt in ("best.pt", "last.pt"):
                (cell_dir / ckpt).unlink(missing_ok=True)
        bar.set_postfix(last=f"{cell['method']} {result['dev_accuracy']:.3f}")

    rows = read_results(results_path)
    summary = summarize(rows)
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(summary[0]) if summary else ["method"])
        writer.writeheader()
        writer.writerows(summary)
    png = plot_study(rows, out / f"study-{args.task}.png",
                     title=f"{args.task.upper()}: dev accuracy vs labelled data ({args.epochs} epochs)")
    print("\nmethod      labelled  unlabelled  seeds  dev accuracy")
    for s in summary:
        print(f"{s['method']:<11} {s['labeled_fraction']:>8.0%} {s['unlabeled_fraction']:>10.0%} {s['seeds']:>6}  "
              f"{s['mean_dev_accuracy']:.4f} ± {s['std_dev_accuracy']:.4f}")
    print(f"wrote {results_path}, {out / 'summary.csv'} and {png}")
    return summary


if __name__ == "__main__":
    main()
