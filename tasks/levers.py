"""The score levers, measured on the default multitask run one lever at a time.

    python tasks/levers.py --epochs 1 --out_dir runs/levers-1ep                  # the screen: ~9 min a cell on 2 CPU cores
    python tasks/levers.py --arms base lld_0.9 --seeds 11711 11712 --out_dir runs/levers-3ep
    python tasks/levers.py --arm mine "--lr 2e-4 --head_lr 2e-3" --out_dir runs/levers-1ep  # an arm of your own

Every cell (arm x seed) is `python tasks/multitask.py <the arm's flags> --seed S --epochs E
--out_dir <out_dir>/<arm>-s<S> --save_every 300`, in its own process: the same data, schedule and budget
for every arm, only the lever's flags differ. Re-running the same command continues: finished cells are
read back, an interrupted one resumes from its last checkpoint (`--resume`), so a kill loses at most
300 steps. Writes, under --out_dir, as soon as each cell finishes (the chart when the grid ends or stops):

    results.jsonl   one line per finished cell: arm, flags, seed, per-epoch dev scores, the kept epoch, wall
    table.md        per arm: the kept epoch's SST / Quora / STS / overall (mean over seeds), Δ vs base, the paired
                    95% interval of the overall score against base over their common seeds and its verdict, wall
    chart.png       per arm, each seed's difference against base on every task and overall, with the mean and
                    the overall score's paired 95% interval

With --extra "--select_on heldout" every cell chooses its epoch on held-out training rows, and the table's scores
are those rows' (how a learning rate is chosen without reading dev).

A table from one seed cannot separate differences smaller than the seed-to-seed spread of the default run
(about a point on Quora, half a point on SST; docs/results.md): read it as a screen, not a verdict. With the
same ≥3 seeds for an arm and base, the interval is the fair protocol's verdict (helps / harms only when it
excludes 0).
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make the repository importable, not this folder
    sys.path[0] = str(ROOT)

from tasks import techniques  # noqa: E402
from tasks.engine.checkpointing import read_jsonl  # noqa: E402
from tasks.studies.report import interval_text, paired_chart, write_table as write_markdown  # noqa: E402
from tasks.studies.runner import Study  # noqa: E402
from tasks.studies.stats import compare  # noqa: E402

# name -> the flags that differ from the default run (docs/levers.md says what each one does): the levers that
# are flags of the run itself, then every arm a technique the multitask CLI offers declares (tasks/techniques/)
LEVERS: Dict[str, List[str]] = {
    "base": [],
    "lld_0.9": ["--layer_lr_decay", "0.9"],
    "msd_4": ["--head_dropout_samples", "4"],
    "para_transitive": ["--para_augment", "transitive"],
    "para_symmetric": ["--para_augment", "symmetric"],
    "mnrl_1": ["--para_mnrl_weight", "1"],
    "reinit_1": ["--reinit_layers", "1"],
    "sts_corr": ["--sts_loss", "mse+corr"],
    "sts_cross": ["--sts_head", "cross"],
    "rdrop_1": ["--rdrop_alpha", "1"],  # the registry's "rdrop" with α written as 1: earlier grids' records name it
    "eval_3x": ["--eval_every", "107"],  # 3 evaluations in the default run's 321-step epoch: avg_3's fair base
    "avg_3": ["--eval_every", "107", "--average_evaluations", "3"],
    "lr_2e-4": ["--lr", "2e-4"],
    "lr_5e-5": ["--lr", "5e-5"],
    "sst_weight_2": ["--sst_loss_weight", "2"],
}
ARMS: Dict[str, List[str]] = {**LEVERS, **{name: list(flags) for t in techniques.offered("multitask")
                                          for name, (flags, _) in t.arms.items()}}
TASKS = ("sst", "para", "sts")
RECORD_KEYS = ("epoch", "step", "train_loss", "dev", "lr", "train_seconds", "seconds")  # the trainer's own


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arms", nargs="+", default=["base", "lld_0.9", "msd_4", "para_transitive", "sts_corr",
                                                  "reinit_1", "para_symmetric", "mnrl_1", "rdrop_1"],
                   help=f"arms in the order they run; known: {', '.join(ARMS)}")
    p.add_argument("--arm", nargs=2, action="append", default=[], metavar=("NAME", "FLAGS"),
                   help="an extra arm: its name and its multitask flags as one quoted string")
    p.add_argument("--seeds", nargs="+", type=int, default=[11711])
    p.add_argument("--epochs", type=int, default=3, help="the training budget of every cell")
    p.add_argument("--out_dir", default="runs/levers")
    p.add_argument("--extra", default="", help="flags added to every cell (e.g. '--use_gpu')")
    return p


def cell_command(flags: List[str], seed: int, epochs: int, cell_dir: Path, extra: str, resume: bool) -> List[str]:
    cmd = [sys.executable, str(ROOT / "tasks" / "multitask.py"), *flags, *shlex.split(extra), "--seed", str(seed),
           "--epochs", str(epochs), "--out_dir", str(cell_dir), "--predictions_dir", str(cell_dir / "predictions"),
           "--no-predict_test", "--save_every", "300"]
    return cmd + (["--resume"] if resume else [])


def cell_record(arm: str, flags: List[str], seed: int, cell_dir: Path, wall: float) -> dict:
    """What a finished cell's metrics.jsonl says: per-epoch dev scores and the kept (best overall) epoch."""
    records = read_jsonl(cell_dir / "metrics.jsonl")
    epochs = [r for r in records if "dev" in r and not r.get("final")]
    final = next((r for r in records if r.get("final")), None)
    if not epochs or final is None:
        raise RuntimeError(f"{cell_dir / 'metrics.jsonl'} holds no finished run")
    kept = next((r for r in epochs if r["step"] == final["best_step"]), None)
    if kept is None:
        raise RuntimeError(f"{cell_dir / 'metrics.jsonl'}: the kept step {final['best_step']} has no evaluation")
    return {"arm": arm, "flags": flags, "seed": seed, "epochs": [r["dev"] for r in epochs],
            "kept_epoch": kept["epoch"], "kept_step": kept["step"], "kept": kept["dev"], "wall_seconds": wall,
            "seconds": sum(r.get("seconds", 0.0) for r in epochs),
            # what the techniques logged (e.g. PCGrad's conflicts), evaluation by evaluation
            "technique_metrics": [{k: v for k, v in r.items() if k not in RECORD_KEYS} for r in epochs]}


def summarize(records: List[dict], order: List[str]) -> List[dict]:
    """Per arm: the kept epoch's scores (mean over seeds), Δ against base, and the overall score's paired interval
    against base over the seeds both have (a task the arm did not train (--tasks) is nan, shown as —)."""
    metrics = {k: (lambda r, k=k: r["kept"].get(k, math.nan)) for k in ("score",) + TASKS}
    rows = []
    for c in compare(records, arm=lambda r: r["arm"], metrics=metrics, baseline=lambda a: "base", order=order):
        mine = c["records"]
        rows.append({**c, **c["mean"], "flags": " ".join(mine[0]["flags"]) or "(the defaults)",
                     "wall": sum(r.get("seconds", r.get("train_seconds", 0.0)) for r in mine) / len(mine),
                     "kept_at": "/".join(f"{r['kept_epoch']}" + (f":{r['kept_step']}" if "kept_step" in r else "")
                                         for r in mine)})
    return rows


def order(arms: Dict[str, List[str]], records: List[dict]) -> List[str]:
    """This command's arms first, then those of earlier commands on the same --out_dir."""
    return list(dict.fromkeys([*arms, *(r["arm"] for r in records)]))


def write_table(rows: List[dict], out_dir: Path, header: str) -> None:
    table = []
    for r in rows:
        d = r["delta"] if r["arm"] != "base" else None
        cells = ["—" if math.isnan(r[k]) else f"{r[k]:.4f}" + (f" ({d[k]:+.4f})" if d else "") for k in TASKS]
        table.append([r["arm"], f"`{r['flags']}`", r["n"], *cells, f"{r['score']:.4f}",
                      f"{d['score']:+.4f}" if d else "", interval_text(r) if r["verdict"] else "", r["verdict"],
                      r["kept_at"], f"{r['wall']:.0f}"])
    write_markdown(out_dir / "table.md", header, ["arm", "flags", "seeds", "SST", "Quora", "STS", "overall",
                                                  "Δ overall", "paired 95% interval", "verdict", "kept at epoch:step",
                                                  "s / cell"], table, right=[0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1])


def write_chart(rows: List[dict], out_dir: Path) -> None:
    """Each arm's per-seed differences against base (dots) overall and on every task, their mean (bar) and the
    overall score's paired 95% interval (whisker): the seed-to-seed spread a single run hides."""
    paired_chart(rows, out_dir / "chart.png", ("score",) + TASKS, ("overall", "SST acc", "Quora acc", "STS r"),
                 ylabel="difference against base")


def write_outputs(records: List[dict], arms: Dict[str, List[str]], out_dir: Path, header: str,
                  chart: bool = True) -> None:
    """table.md; with `chart`, chart.png too (drawn once, when the grid ends)."""
    rows = summarize(records, order(arms, records))
    write_table(rows, out_dir, header)
    if chart:
        write_chart(rows, out_dir)


def scored_on(extra: str) -> str:
    """Which rows the cells' scores are on: with --extra "--select_on heldout", held-out training rows, not dev."""
    flags = shlex.split(extra)
    heldout = ("--select_on", "heldout") in zip(flags, flags[1:]) or "--select_on=heldout" in flags
    return "held-out training" if heldout else "dev"


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    defined = {**ARMS, **{name: shlex.split(flags) for name, flags in args.arm}}  # an --arm may redefine a known one
    unknown = [name for name in args.arms if name not in defined]
    if unknown:
        sys.exit(f"--arms: unknown arm {unknown[0]!r}; known: {', '.join(defined)} (or define one with --arm NAME FLAGS)")
    arms = {name: defined[name] for name in [*args.arms, *(name for name, _ in args.arm)]}  # --arm's run too
    out_dir = Path(args.out_dir)
    # re-running the same command continues: a finished cell is read back, an interrupted one resumes
    study = Study(out_dir, key=("arm", "seed"), budget={"epochs": args.epochs, "extra": args.extra}, resume=True)
    header = (f"Levers on `python tasks/multitask.py --epochs {args.epochs} {args.extra}`, one at a time; the scores "
              f"are on the {scored_on(args.extra)} rows, the kept epoch the best overall there; (Δ) against base "
              "with the same seeds; the paired interval is of the overall score's per-seed difference "
              "(tasks/studies/stats.py); s / cell: training and evaluation, per cell.")
    cells = [{"arm": name, "seed": seed} for name in arms for seed in args.seeds]
    for cell in cells:
        done = study.find(cell)
        if done and done["flags"] != arms[cell["arm"]]:
            sys.exit(f"{study.path}: arm {cell['arm']!r} seed {cell['seed']} ran with {done['flags']}, not "
                     f"{arms[cell['arm']]}: use another --out_dir or arm name")

    def run_cell(cell: dict) -> dict:
        name, seed = cell["arm"], cell["seed"]
        cell_dir = out_dir / f"{name}-s{seed}"
        resume = (cell_dir / "last.safetensors").exists()
        cmd = cell_command(arms[name], seed, args.epochs, cell_dir, args.extra, resume)
        print(f"[levers] {name} seed {seed}{' (resuming)' if resume else ''}: {shlex.join(cmd)}", flush=True)
        start = time.time()
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return cell_record(name, arms[name], seed, cell_dir, time.time() - start)

    try:
        study.run(cells, run_cell, after=lambda records: write_outputs(records, arms, out_dir, header, chart=False),
                  desc="levers", name=lambda c: f"{c['arm']}/seed {c['seed']}")
    finally:  # also when stopped (Ctrl-C, a failed cell): the chart of the cells that finished
        if study.records:
            write_outputs(study.records, arms, out_dir, header)
    print((out_dir / "table.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
