"""The ablation runner: plain fine-tuning against each technique, on the same budget, over several seeds.

    python tasks/ablate.py --task sst --epochs 1 --max_examples 2000 --out_dir runs/ablate-sst-cpu   # 2-core CPU
    python tasks/ablate.py --task sst --epochs 3 --seeds 1 2 3 4 5 --use_gpu --out_dir runs/ablate-sst-gpu
    python tasks/ablate.py --techniques plain cat child_d dae+cat --resume    # add cells to a finished grid
    python tasks/ablate.py --techniques plain cat --select_on heldout --lr_grid 1e-4 2e-4 \
        --tune_grid adv_epsilon=0.3,1 adv_lambda=0.1,0.5      # each arm's lr and its own flags tuned on one seed

Techniques: plain, dae (TSDAE phase), mlm (MLM phase), contrastive (cosine-MSE phase), supcon, 3phase
(DAE → contrastive → fine-tune), cat (contrastive adversarial training), child_f, child_d; 'a+b' combines.

Every cell (technique × seed) is one in-process call of the classifier's code path (`tasks.launch.run.run`) with
the same data, fine-tuning epochs, batch size and learning rate; only the technique's flags differ. The
phases (DAE, contrastive) are extra passes over the same training data: they are not counted in --epochs
but listed in the table's "extra epochs" column, and every cell's wall time (its phases' included) is measured,
so the cost of a technique is visible beside its score. A seed's phases are trained once and reused by every
cell that needs them, whatever its learning rate or --finetune_encoder (tasks/studies/phase_cache.py). Writes, under
--out_dir, as soon as each cell finishes (the chart when the grid ends or stops):

    results.jsonl   one line per finished cell (what --resume reads)
    table.md        mean ± sample standard deviation of the dev metric per technique, Δ against plain
    table.csv       the same numbers, unformatted
    chart.png       each technique's per-seed differences against plain, their mean and paired 95% interval
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import math
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a script: make the repository importable, not this folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from tasks import classifier  # noqa: E402
from tasks.domain.data import get_task  # noqa: E402
from tasks import techniques  # noqa: E402
from tasks.engine.checkpointing import read_jsonl  # noqa: E402
from tasks.studies.phase_cache import cached_phases  # noqa: E402
from tasks.studies.report import interval_text, paired_chart, write_table  # noqa: E402
from tasks.studies.runner import Study  # noqa: E402
from tasks.studies.stats import compare  # noqa: E402
from tasks.launch.configs import RunConfig  # noqa: E402
from tasks.launch.run import parse_with_config, resolved_flags, run, task_files  # noqa: E402

ARMS = techniques.arms()  # name -> (flags, what it is), from each technique's module
# the flags each technique declares (its Config's fields), and each arm's: what --tune_grid may vary
TECHNIQUE_FLAGS_OF_ARM = {"plain": set(), **{arm: {f.name for f in dataclasses.fields(t.Config)}
                                            for t in techniques.REGISTRY.values() for arm in t.arms}}
TECHNIQUE_FLAGS = set().union(*TECHNIQUE_FLAGS_OF_ARM.values())
DEFAULT_TECHNIQUES = ("plain", "dae", "contrastive", "3phase", "cat", "child_f", "child_d")
PHASE_ORDER = ("dae", "contrastive")


def technique_args(name: str):
    """(phases, flags, description) of an arm or of a combination 'a+b' (phases merged, other flags joined)."""
    parts = name.split("+")
    unknown = [p for p in parts if p not in ARMS]
    if unknown:
        raise ValueError(f"unknown technique {unknown[0]!r}; known: {', '.join(ARMS)} (combine with +)")
    phases, flags = set(), []
    for part in parts:
        arm = list(ARMS[part][0])
        while "--phases" in arm:  # the phases of every part, merged into one --phases in the paper's order
            i = arm.index("--phases")
            phases.update(p for p in arm[i + 1].split(",") if p != "finetune")
            del arm[i:i + 2]
        flags += arm
    names = [f for f in flags if f.startswith("--")]
    if len(names) != len(set(names)) or ("dae" in parts and "mlm" in parts):
        raise ValueError(f"{name!r} combines techniques that set the same option")
    return tuple(p for p in PHASE_ORDER if p in phases), tuple(flags), " + ".join(ARMS[t][1] for t in parts)


def summarize(records: Sequence[dict], order: Sequence[str]) -> List[dict]:
    """One row per technique: n, mean and sample sd (ddof=1) of the dev score, Δ mean against 'plain', the paired
    95% interval of the per-seed difference against plain and its verdict, the learning rate, mean wall time."""
    main = [r for r in records if r.get("stage", "main") == "main"]
    rows = []
    for c in compare(main, arm=lambda r: r["technique"], metrics={"score": lambda r: r["score"]},
                     baseline=lambda t: "plain", order=order):
        mine = c["records"]
        rows.append({"technique": c["arm"], "n": c["n"], "mean": c["mean"]["score"], "sd": c["sd"]["score"],
                     "delta": c["delta"]["score"] if c["delta"] else float("nan"), "lo": c["paired"]["lo"],
                     "hi": c["paired"]["hi"], "verdict": c["verdict"], "lr": mine[0].get("lr"),
                     "params": mine[0].get("params", {}), "extra_epochs": mine[0]["extra_epochs"],
                     "wall_seconds": float(np.mean([r["wall_seconds"] for r in mine])), "compared": c})
    return [r for r in rows if r["technique"] in order]


def write_tables(rows: List[dict], out_dir: Path, metric: str, header: str, chart: bool = True) -> None:
    """table.csv and table.md; with `chart`, chart.png (a second or so of drawing: once, when the grid ends)."""
    if not rows:
        return
    with open(out_dir / "table.csv", "w", encoding="utf-8") as f:
        f.write(f"technique,seeds,mean_{metric},sd_{metric},delta_vs_plain,paired_lo,paired_hi,verdict,lr,extra_epochs,"
                "wall_seconds_per_run,tuned\n")
        for r in rows:
            tuned = " ".join(f"{k}={v}" for k, v in r["params"].items())
            f.write(f"{r['technique']},{r['n']},{r['mean']:.6f},{r['sd']:.6f},{r['delta']:.6f},{r['lo']:.6f},{r['hi']:.6f},"
                    f"{r['verdict']},{r['lr']},{r['extra_epochs']},{r['wall_seconds']:.1f},{tuned}\n")
    table = []
    for r in rows:
        tuned = "".join(f", {k} {v}" for k, v in r["params"].items())
        table.append([r["technique"], technique_args(r["technique"])[2], r["n"], f"{r['lr']:g}{tuned}",
                      f"{r['mean']:.4f} ± {r['sd']:.4f}", "" if math.isnan(r["delta"]) else f"{r['delta']:+.4f}",
                      interval_text(r["compared"]) if r["technique"] != "plain" else "", r["verdict"],
                      r["extra_epochs"], f"{r['wall_seconds']:.1f}"])
    write_table(out_dir / "table.md", header, ["technique", "what", "seeds", "lr", f"dev {metric} (mean ± sd)",
                                               "Δ vs plain", "paired 95% interval", "verdict", "extra epochs",
                                               "wall s / run"], table, right=[0, 0, 1, 1, 1, 1, 1, 0, 1, 1])
    if chart:
        paired_chart([r["compared"] for r in rows], out_dir / "chart.png", ["score"], [f"dev {metric}"],
                     ylabel="difference against plain, per seed")


ABLATE_ONLY = ("task", "techniques", "seeds", "keep_checkpoints", "lr_grid", "tune_seed", "tune_grid", "phase_cache")
PER_CELL = ("seed", "out_dir", "predictions_dir", "resume", "phases", "tasks", "predict_test", "config")


def build_parser() -> argparse.ArgumentParser:
    """The classifier's parser (every flag with its default and help, declared there once) plus the grid's own."""
    p = classifier.build_parser(__doc__.splitlines()[0])
    p.set_defaults(out_dir="runs/ablate")
    g = p.add_argument_group("ablation grid")
    g.add_argument("--task", choices=classifier.TASKS, default="sst", help="the task every cell trains on")
    g.add_argument("--techniques", nargs="+", default=list(DEFAULT_TECHNIQUES), metavar="NAME",
                   help=f"names from {', '.join(ARMS)}; 'a+b' combines two")
    g.add_argument("--seeds", nargs="+", type=int, default=[11711, 11712, 11713, 11714, 11715],
                   help="one cell per technique and seed (at least 3, for a mean ± sd)")
    g.add_argument("--lr_grid", nargs="+", type=float, default=None,
                   help="tune each technique's --lr first: one run per value on --tune_seed, chosen on the held-out "
                        "training rows (needs --select_on heldout); --head_lr scales with it (default: none: "
                        "--lr as given)")
    g.add_argument("--tune_grid", nargs="+", default=None, metavar="FLAG=V1,V2",
                   help="tune a technique's own flags with the lr: every combination of these values (and of --lr_grid) "
                        "on --tune_seed, for the arms whose technique declares the flag (e.g. adv_epsilon=0.3,1 "
                        "child_tuning_p=0.1,0.3); needs --select_on heldout (default: none)")
    g.add_argument("--tune_seed", type=int, default=None, help="the seed of the tuning runs (default: a seed not in --seeds)")
    g.add_argument("--keep_checkpoints", action="store_true", help="keep each cell's checkpoints (large)")
    g.add_argument("--phase_cache", default=None, metavar="DIR",
                   help="where each seed's phases (DAE, contrastive) are trained once and reused by every cell and grid "
                        "that needs them (tasks/studies/phase_cache.py; default: <out_dir>/phases)")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = parse_with_config(p, argv)
    for name in args.techniques:
        technique_args(name)  # fail now, not hours into the grid
    if len(set(args.seeds)) < 3:
        p.error(f"use at least 3 distinct seeds for a mean ± sd, got {args.seeds}")
    if (args.lr_grid or args.tune_grid) and args.select_on != "heldout":
        p.error("--lr_grid and --tune_grid choose on held-out training rows, never on dev: add --select_on heldout")
    args.tune_grid = parse_tune_grid(p, args.tune_grid)
    if args.tune_seed is None:
        args.tune_seed = max(args.seeds) + 1
    return args


def parse_tune_grid(parser, entries) -> Dict[str, List[str]]:
    """'flag=v1,v2' entries -> {flag: [v1, v2]}; each flag must be a technique's (the values are parsed with it)."""
    grid, cell_parser = {}, classifier.build_parser()  # the parser each cell's flags go through (cell_args)
    for entry in entries or []:
        name, _, values = entry.partition("=")
        if not values or name not in TECHNIQUE_FLAGS:
            parser.error(f"--tune_grid {entry!r}: expected FLAG=V1,V2 with FLAG one of the techniques' flags "
                         f"({', '.join(sorted(TECHNIQUE_FLAGS))})")
        grid[name] = values.split(",")
        for value in grid[name]:  # now, not hours into the grid: a switch (no value) or a bad value is refused
            try:
                cell_parser.parse_args([f"--{name}", value])
            except SystemExit:
                parser.error(f"--tune_grid {entry!r}: --{name} {value} is not a valid setting of that flag")
    return grid


def tuning_points(technique: str, lr_grid, tune_grid: Dict[str, List[str]], lr: float) -> List[Tuple[float, dict]]:
    """Every (lr, {flag: value}) the tuning seed tries for this arm: the flags its techniques declare, crossed."""
    owned = set().union(*(TECHNIQUE_FLAGS_OF_ARM[part] for part in technique.split("+")))
    mine = {k: v for k, v in tune_grid.items() if k in owned}
    combos = [dict(zip(mine, values)) for values in itertools.product(*mine.values())]
    return [(x, c) for x in (lr_grid or [lr]) for c in combos]


def cell_config(args, technique: str, seed: int, cell_dir: Path, lr: float, params: Optional[dict] = None
                ) -> RunConfig:
    """One cell's classifier run: the grid's shared budget, its seed, folder and learning rate (the head's
    scaled with it), then the technique's flags and its tuned values, parsed as the command line would."""
    phases, flags, _ = technique_args(technique)
    flags = list(flags) + [a for k, v in (params or {}).items() for a in (f"--{k}", v)]
    cell = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in ABLATE_ONLY})
    cell.tasks, cell.seed, cell.out_dir, cell.predict_test = [args.task], seed, str(cell_dir), False
    cell.lr, cell.head_lr = lr, (args.head_lr or args.lr) * lr / args.lr
    cell.predictions_dir, cell.phases = str(cell_dir / "predictions"), phases + ("finetune",)
    cell = build_parser().parse_args(list(flags), namespace=cell)  # only the technique's flags change
    return RunConfig.from_args(cell, "classifier")


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    out_dir = Path(args.out_dir)
    budget = {k: v for k, v in resolved_flags(args).items()
              if k not in PER_CELL and k not in ABLATE_ONLY or k in ("task", "lr_grid", "tune_seed")}
    if args.tune_grid:  # only when given, so a grid from before --tune_grid existed still resumes
        budget["tune_grid"] = args.tune_grid
    # a grid from before a flag existed ran at that flag's default, and its records have no params or stage
    study = Study(out_dir, key=("technique", "seed", "lr", "stage", "params"), budget=budget, resume=args.resume,
                  key_defaults={"stage": "main", "params": {}},
                  budget_defaults=resolved_flags(build_parser().parse_args([])))
    metric = get_task(args.task).metric
    phase_cache = Path(args.phase_cache or out_dir / "phases")
    train = lambda c: run(c, [args.task], {args.task: task_files(c.flags, args.task, args.task)})  # noqa: E731
    command = "python tasks/ablate.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    order = list(dict.fromkeys(["plain", *args.techniques]))

    def run_cell(cell: dict) -> dict:
        technique, seed, lr, stage, params = (cell[k] for k in study.key)
        tried = "".join(f"-{k}{v}" for k, v in params.items())
        cell_dir = out_dir / (f"{technique}-seed{seed}" + (f"-lr{lr:g}{tried}" if stage == "tune" else ""))
        spec = cell_config(args, technique, seed, cell_dir, lr, params)
        tqdm.write(f"=== {stage}: {technique}, seed {seed}, lr {lr:g}{tried} ===")
        phases, phase_seconds = spec.phases.phases[:-1], 0.0
        if phases:  # trained once per seed (and phase setting), then every cell starts from the saved encoder
            encoder, phase_seconds = cached_phases(spec, phases, phase_cache, train)
            spec = spec.with_flags(model=encoder, phases=("finetune",))
        t0 = time.time()
        scores = train(spec)
        history = [r for r in read_jsonl(cell_dir / "metrics.jsonl") if "final" not in r]
        record = {"score": scores[args.task], "selection": max(h["dev"]["score"] for h in history), "metric": metric,
                  "wall_seconds": round(time.time() - t0 + phase_seconds, 1), "phase_seconds": round(phase_seconds, 1),
                  "finetune_epochs": args.epochs,
                  "extra_epochs": sum(spec.flags[f"{p}_epochs"] for p in technique_args(technique)[0])}
        if not args.keep_checkpoints:  # the checkpoints and the saved model: large, and the record is kept
            shutil.rmtree(cell_dir / "model", ignore_errors=True)
            for path in cell_dir.rglob("*.safetensors"):
                path.unlink()
        gc.collect()  # a cell's model can sit in reference cycles (the DDP wrapper's loss): free it before the next
        return record

    def cell(technique, seed, lr, stage, params):
        return {"technique": technique, "seed": seed, "lr": lr, "stage": stage, "params": params}

    chosen = {}
    for technique in args.techniques:  # each arm's lr (and own flags), chosen on the held-out rows of the tuning seed
        points = tuning_points(technique, args.lr_grid, args.tune_grid, args.lr)
        if len(points) > 1:
            tried = study.run([cell(technique, args.tune_seed, lr, "tune", params) for lr, params in points], run_cell,
                              desc=f"tuning {technique}")
            best = max(tried, key=lambda r: r["selection"])
            points = [(best["lr"], best["params"])]
        chosen[technique] = points[0]
    write = lambda records, chart=False: write_tables(summarize(records, order), out_dir, metric,  # noqa: E731
                                                      f"Ablation on {args.task} (dev {metric}); command: `{command}`",
                                                      chart)
    try:
        study.run([cell(t, s, chosen[t][0], "main", chosen[t][1]) for s in args.seeds for t in args.techniques],
                  run_cell, after=write, desc="ablation grid", name=lambda c: f"{c['technique']}/seed {c['seed']}")
    except BaseException:  # stopped (Ctrl-C, a failed cell): the chart of the cells that finished
        write(study.records, chart=True)
        raise

    rows = summarize(study.records, order)
    wall = time.time() - started
    sample = f", a fixed random {args.max_examples} examples per split" if args.max_examples else ""
    grids = ([f"--lr from {args.lr_grid}"] if args.lr_grid else []) + [
        f"--{k} from {v} (where the technique has it)" for k, v in args.tune_grid.items()]
    tuned = (f"; each technique's {', '.join(grids)} chosen on held-out training rows (seed {args.tune_seed})"
             if grids else "")
    header = (f"Ablation on {args.task} (dev {metric}), {len(args.seeds)} seeds, {args.epochs} fine-tuning epoch(s)"
              f"{sample}, the epoch chosen on {'held-out training rows' if args.select_on == 'heldout' else 'dev'}"
              f"{tuned}; this invocation took {wall / 60:.1f} min.\n\nCommand: `{command}`")
    write_tables(rows, out_dir, metric, header)
    print((out_dir / "table.md").read_text())
    print(f"wrote {out_dir / 'table.md'}, {out_dir / 'table.csv'}, {out_dir / 'chart.png'} ({wall / 60:.1f} min)")
    return rows


if __name__ == "__main__":
    main()
