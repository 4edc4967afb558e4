"""The study of issue #5: dev accuracy of the plain classifier, GAN-BERT and AC-GAN-BERT against the amount of
labelled and unlabelled data, over seeds, every cell of a grid on the same budget.

    python gan/study.py --use_gpu                                        # the full grid on SST-5, fine-tuned encoder
    python gan/study.py --fractions 0.01 0.05 0.1 1 --seeds 1 2 --unlabeled 1 --max_examples 2000 --epochs 2
    python gan/study.py --resume                                         # continue: finished cells are skipped
    python gan/study.py --frozen --fractions 0.05 --unlabeled 0 0.1 0.5 1 --seeds 1 2 3 4 5 --steps 2000

Fine-tuned (the paper's method, gan/train.py): within one (seed, labelled fraction, unlabelled fraction) the
three methods share the labelled rows, the initial weights and the number of optimizer steps (an epoch of
the GAN, see gan/data.py), so more unlabelled data also means more steps. `--frozen` (gan/frozen.py): the
encoder's embeddings are computed once and cached; every cell runs `--steps` steps whatever its unlabelled
data, each batch with the same labelled rows, and each evaluation logs the probe and diversity numbers of
G's fakes (gan/probe.py). "plain" cannot use unlabelled rows, so in this mode it runs once per seed and
labelled fraction and is the baseline of every unlabelled amount.
Flags this script does not know are passed to every run (gan/train.py's flags: --lr, --batch_size, --model,
--noise_dim, --g_lr, ...). Writes, under --out_dir: results.jsonl (one line per finished cell, written as it
finishes; the one study runner, tasks/studies/runner.py), summary.csv and table.md (mean, sd, the paired 95% interval against plain), study-{task}.png, and
cells/<cell>/ with each run's metrics.jsonl (and, fine-tuned, its log and plots).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable, not this folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from gan import train  # noqa: E402
from gan.frozen import FrozenConfig, cached_embeddings, run_cell  # noqa: E402
from gan.losses import VARIANTS  # noqa: E402
from gan.model import GanConfig  # noqa: E402
from gan.plots import plot_study, plot_unlabeled  # noqa: E402
from gan.probe import fit_reference  # noqa: E402
from gan.stats import FAKE_COLUMNS, compared, summarize  # noqa: E402
from tasks.domain.data import get_task  # noqa: E402
from tasks.launch.configs import RunConfig  # noqa: E402
from tasks.launch.run import task_files  # noqa: E402
from tasks.studies.report import paired_chart, write_table  # noqa: E402
from tasks.studies.runner import Study  # noqa: E402

PASSTHROUGH = "Any other flag goes to every run of gan/train.py (see python gan/train.py --help)."
KEY = ("task", "method", "labeled_fraction", "unlabeled_fraction", "seed")
COLUMNS = [*KEY, "labeled", "unlabeled", "replicate", "steps_per_epoch", "epochs", "best_epoch", "dev_accuracy",
           *FAKE_COLUMNS, "wall_seconds"]  # the fakes' numbers at the kept epoch, measured in the tuned encoder's space
FROZEN_COLUMNS = [*KEY, "labeled", "unlabeled", "steps", "dev_accuracy", *FAKE_COLUMNS, "wall_seconds"]
CHECKPOINTS = ("best.safetensors", "last.safetensors")


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
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (fine-tuned)")
    p.add_argument("--max_examples", type=int, default=None, help="a fixed random N rows of each file (quick grids)")
    p.add_argument("--out_dir", default=None, help="default: runs/gan_study, or runs/gan_frozen_study with --frozen")
    p.add_argument("--resume", action="store_true", help="skip the cells already in results.csv")
    p.add_argument("--overwrite", action="store_true", help="start over, discarding an existing results.csv")
    p.add_argument("--keep_checkpoints", action="store_true", help="keep each cell's best and last checkpoints")
    f = p.add_argument_group("frozen encoder (--frozen)")
    f.add_argument("--frozen", action="store_true", help="embed once with the frozen encoder, train D and G on the vectors")
    f.add_argument("--steps", type=int, default=FrozenConfig.steps, help="steps per run: the same in every cell")
    f.add_argument("--labeled_per_batch", type=int, default=FrozenConfig.labeled_per_batch)
    f.add_argument("--unlabeled_per_batch", type=int, default=FrozenConfig.unlabeled_per_batch)
    f.add_argument("--d_lr", type=float, default=FrozenConfig.lr, help="D's learning rate (G's: --g_lr)")
    f.add_argument("--eval_every", type=int, default=FrozenConfig.eval_every, help="steps between evaluations")
    f.add_argument("--embeddings", default=None, help="the cache file; default runs/gan_frozen/embeddings-{task}.safetensors")
    f.add_argument("--threads", type=int, default=1, help="torch threads (the frozen runs are small: 1 is fastest)")
    args, passthrough = p.parse_known_args(argv)
    args.out_dir = args.out_dir or ("runs/gan_frozen_study" if args.frozen else "runs/gan_study")
    if any(not 0 < f <= 1 for f in args.fractions):
        p.error(f"--fractions must be in (0, 1], got {args.fractions}")
    if any(not 0 <= u <= 1 for u in args.unlabeled):
        p.error(f"--unlabeled must be in [0, 1], got {args.unlabeled}")
    if args.steps < 1 or args.eval_every < 1:
        p.error("--steps and --eval_every must be >= 1")
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
    to be unlabelled, so that cell is run once (as unlabelled fraction 0) and drawn in every panel; so is
    "plain" in the frozen mode, where it never sees the unlabelled rows nor their number."""
    cells, seen = [], set()
    for seed in args.seeds:
        for u in args.unlabeled:
            for f in sorted(args.fractions):
                for method in args.methods:
                    once = f >= 1 or (args.frozen and method == "plain")
                    key = (args.task, method, f, 0.0 if once else u, seed)
                    if key not in seen:
                        seen.add(key)
                        cells.append(dict(zip(KEY, key)))
    return cells


def cell_name(cell) -> str:
    return "{task}-{method}-l{labeled_fraction:g}-u{unlabeled_fraction:g}-s{seed}".format(**cell)


def read_legacy_csv(path):
    """The cells of a results.csv, which this study wrote before it kept results.jsonl (numbers typed again)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    typed = {"labeled_fraction": float, "unlabeled_fraction": float, "seed": int}
    return [{k: typed[k](v) if k in typed else v for k, v in r.items() if v != ""} for r in rows]


def fine_tuned_runner(args, passthrough, out):
    """A function cell -> result that runs gan/train.py's run_gan in the cell's folder."""
    def run(cell):
        cell_dir = out / "cells" / cell_name(cell)
        resume = args.resume and (cell_dir / "last.safetensors").is_file()
        if cell_dir.exists() and not resume:
            shutil.rmtree(cell_dir)  # a stale partial run
        cell_dir.mkdir(parents=True, exist_ok=True)
        argv_cell = cell_argv(args, passthrough, cell["method"], cell["labeled_fraction"], cell["unlabeled_fraction"],
                              cell["seed"], cell_dir)
        cell_args = train.parse_args(argv_cell + (["--resume"] if resume else []))
        spec = RunConfig.from_args(cell_args, "gan")
        with open(cell_dir / "log.txt", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            result = train.run_gan(spec, args.task, task_files(cell_args, args.task, args.task), show_progress=False)
        if not args.keep_checkpoints:
            for ckpt in CHECKPOINTS:
                (cell_dir / ckpt).unlink(missing_ok=True)
        return result
    return run


def frozen_runner(args, passthrough, out):
    """A function cell -> result on cached embeddings; the embeddings and the probe's real side are made once."""
    targs = train.parse_args(cell_argv(args, passthrough, VARIANTS[0], 1.0, 1.0, 0, out))
    files, spec = task_files(targs, args.task, args.task), RunConfig.from_args(targs, "gan")
    m = spec.model
    cache = args.embeddings or f"runs/gan_frozen/embeddings-{args.task}{f'-n{args.max_examples}' if args.max_examples else ''}.safetensors"
    started = time.time()
    data = cached_embeddings(cache, args.task, files, m.model, m.pooling, m.max_length, args.max_examples)
    k = get_task(args.task).num_classes
    reference = fit_reference(data["train"], data["train_labels"], k, knn_points=min(1000, len(data["train"]) - 1))
    print(f"embeddings {tuple(data['train'].shape)} from {cache} and the probe's reference: {time.time() - started:.0f} s")
    cfg = FrozenConfig(steps=args.steps, labeled_per_batch=args.labeled_per_batch,
                       unlabeled_per_batch=args.unlabeled_per_batch, lr=args.d_lr, eval_every=args.eval_every,
                       weight_decay=spec.train.weight_decay, max_grad_norm=spec.train.max_grad_norm)
    gan_config = spec.of(GanConfig)

    def run(cell):
        gan = dataclasses.replace(gan_config, method=cell["method"])
        return run_cell(data, k, gan, cfg, cell["labeled_fraction"], cell["unlabeled_fraction"], cell["seed"],
                        reference, out / "cells" / cell_name(cell))
    return run


def main(argv=None):
    args, passthrough = parse_args(argv)
    out = Path(args.out_dir)
    columns = FROZEN_COLUMNS if args.frozen else COLUMNS
    if args.overwrite:
        for old in ("results.jsonl", "results.csv"):
            (out / old).unlink(missing_ok=True)
    budget = {"epochs": args.epochs, "max_examples": args.max_examples, "frozen": args.frozen, "passthrough": passthrough,
              **({k: getattr(args, k) for k in ("steps", "labeled_per_batch", "unlabeled_per_batch", "d_lr", "eval_every")}
                 if args.frozen else {})}
    study = Study(out, key=KEY, budget=budget, resume=args.resume, legacy=lambda: read_legacy_csv(out / "results.csv"))
    cells = grid(args)
    todo = study.todo(cells)
    if args.frozen:
        torch.set_num_threads(args.threads)
    run = (frozen_runner if args.frozen else fine_tuned_runner)(args, passthrough, out) if todo else None

    started = time.time()
    study.run(cells, lambda cell: {k: v for k, v in run(cell).items() if k in columns and k not in KEY}, desc="grid",
              name=cell_name)
    rows = study.records
    summary = summarize(rows, baseline_any_unlabeled=args.frozen)
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(dict.fromkeys(k for s in summary for k in s)) or ["method"], restval="")
        writer.writeheader()
        writer.writerows(summary)
    if args.frozen:
        png = plot_unlabeled(rows, summary, out / f"study-{args.task}-frozen.png",
                             title=f"{args.task.upper()}, frozen encoder: {args.steps} steps in every cell")
    else:
        png = plot_study(rows, out / f"study-{args.task}.png",
                         title=f"{args.task.upper()}: dev accuracy vs labelled data ({args.epochs} epochs)")
    print(f"\n{len(todo)} cells in {(time.time() - started) / 60:.1f} min\n")
    write_table(out / "table.md", "", *markdown_rows(summary))
    paired_chart(compared(rows, baseline_any_unlabeled=args.frozen), out / "chart.png", ["dev_accuracy"], ["dev acc."],
                 title=lambda r: f"{r['arm'][0]} {r['arm'][1]:g} / {r['arm'][2]:g}",
                 ylabel="difference against plain, per seed")
    print((out / "table.md").read_text(encoding="utf-8"))
    print(f"wrote {study.path}, {out / 'summary.csv'}, {out / 'table.md'}, {png} and {out / 'chart.png'}")
    return summary


def _num(x, digits=3):
    return "" if x in ("", None) or x != x else f"{float(x):.{digits}f}"


def markdown_rows(summary):
    """The summary as the README's table: dev accuracy, the paired difference against plain, the fakes' numbers."""
    columns = ["method", "labelled", "unlabelled", "seeds", "dev accuracy", "− plain [95% CI]", "probe", "centroid",
               "spread", "coverage", "class cov."]
    rows = []
    for s in summary:
        diff = "" if "diff_mean" not in s else \
            f"{float(s['diff_mean']):+.3f} [{float(s['diff_lo']):+.3f}, {float(s['diff_hi']):+.3f}]"
        rows.append([s["method"], f"{s['labeled_fraction']:g}", f"{s['unlabeled_fraction']:g}", s["seeds"],
                     f"{s['mean_dev_accuracy']:.3f} ± {s['sd_dev_accuracy']:.3f}", diff,
                     *(_num(s.get(c)) for c in ("probe_acc", "centroid_acc", "spread", "coverage", "class_coverage"))])
    return columns, rows, [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]


if __name__ == "__main__":
    main()
