"""Predict with an ensemble of saved models: the mean of their probabilities, written as the coursework files.

    python tasks/ensemble.py --models runs/seed1/model runs/seed2/model runs/seed3/model [--use_gpu]

Per task, each member predicts every example as it would alone (its processor built from its own head
config: tasks/launch/inference.py), and the ensemble averages what the members output: the five sentiment
probabilities (then the most probable class), the paraphrase probability σ(logit) (then > 0.5), the 0–5
similarity. The members may differ in heads or pooling, not in the tasks' label sets. Writes
predictions/{task}-{dev,test}-output.csv and prints the dev table, each member's row beside the ensemble's.
Cost: one prediction pass per member.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable, not this folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from tasks.launch.cli import add_shared_flag  # noqa: E402
from tasks.domain.data import get_task  # noqa: E402
from tasks.engine.devices import pick_device  # noqa: E402
from tasks.launch.inference import build_processor, dev_table, load_or_exit, model_tasks  # noqa: E402
from tasks.domain.metrics import format_table, overall_score  # noqa: E402
from tasks.launch.run import add_task_file_args, task_files  # noqa: E402

TASKS = ("sst", "cfimdb", "para", "sts")


def ensemble_probabilities(members: Sequence[torch.Tensor]) -> torch.Tensor:
    """The members' mean, example by example: (M, N, ...) -> (N, ...)."""
    shapes = {tuple(m.shape) for m in members}
    if len(shapes) != 1:
        raise ValueError(f"the members' outputs differ in shape ({sorted(shapes)}): not the same label set")
    return torch.stack(list(members)).float().mean(0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="saved model folders written by training")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=None, help="default: the first model's tasks")
    parser.add_argument("--splits", nargs="+", choices=("dev", "test"), default=["dev", "test"])
    for name in ("use_gpu", "data_dir", "predictions_dir"):
        add_shared_flag(parser, name)
    for name in TASKS:
        add_task_file_args(parser, name, name)
    return parser.parse_args(argv)


def main(argv=None, prog: str = "ensemble.py") -> Dict[str, Dict[str, float]]:
    args = parse_args(argv)
    device = pick_device(args.use_gpu)
    outputs: Dict[tuple, List[torch.Tensor]] = {}  # (task, split) -> one tensor per member
    rows: Dict[str, Dict[str, float]] = {}
    tasks, files, first = None, {}, {}
    for m, folder in enumerate(args.models, 1):  # one member in memory at a time
        model = load_or_exit(folder, prog)
        model.to(device)
        tasks = tasks or model_tasks(model, args.tasks, prog)
        model_tasks(model, tasks, prog)  # every member must have every task's head
        scores = {}
        for name in tasks:
            files[name] = task_files(args, name, name)
            try:
                proc = build_processor(name, model, model.tokenizer, files[name], splits=args.splits)
            except (OSError, ValueError) as err:
                sys.exit(f"{prog}: {err}")
            first.setdefault(name, proc)
            for split in args.splits:
                if proc.splits[split]:
                    probs = proc.probabilities(model, split, device).cpu()
                    outputs.setdefault((name, split), []).append(probs)
                    if split == "dev" and all(e.label is not None for e in proc.splits["dev"]):
                        scores[name] = proc.score(proc.from_probabilities(probs), "dev")
        if scores:
            rows[f"model {m}"] = {**scores, "overall": overall_score(scores)}
        del model
    scores, written = {}, []
    for (name, split), members in outputs.items():
        proc = first[name]
        preds = proc.from_probabilities(ensemble_probabilities(members))
        proc.write(files[name][f"{split}_out"], preds, split)
        written.append(files[name][f"{split}_out"])
        if split == "dev" and all(e.label is not None for e in proc.splits["dev"]):
            scores[name] = proc.score(preds, "dev")
    if scores:
        rows["ensemble"] = {**scores, "overall": overall_score(scores)}
        print(f"dev ({', '.join(get_task(t).metric for t in scores)}; overall as the coursework):")
        print(format_table(rows))
    print("predictions written:\n  " + "\n  ".join(sorted(written)))
    return {"rows": rows, "table": dev_table(scores) if scores else {}}


if __name__ == "__main__":
    main()
