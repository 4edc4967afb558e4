"""Score a saved model on the dev files, without training, and print the table.

    python tasks/evaluate.py --model runs/multitask/model [--use_gpu]

Each task's coursework metric (accuracy; Pearson r for STS), STS's Spearman rank correlation beside it, and
the coursework's overall score. The predictions are made as at the end of training (tasks/launch/inference.py).
"""
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable, not this folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tasks.launch.cli import fail  # noqa: E402
from tasks.domain.data import get_task  # noqa: E402
from tasks.launch.inference import predict_split  # noqa: E402
from tasks.domain.metrics import format_table, overall_score, spearman_r  # noqa: E402
from tasks.predict import load, parse_args  # noqa: E402


def main(argv=None):
    args = parse_args(argv, description=__doc__.splitlines()[0], splits=("dev",), writes=False)
    model, processors, _, device = load(args, "evaluate.py", ("dev",))
    table, scores = {}, {}
    for name, proc in processors.items():
        if any(e.label is None for e in proc.splits["dev"]):
            fail("evaluate.py", f"the {name} dev file has no labels to score against")
        preds = predict_split(proc, model, "dev", device)
        scores[name] = proc.score(preds, "dev")
        table[name] = {get_task(name).metric: scores[name]}
        if name == "sts":
            table[name]["spearman"] = spearman_r(preds, [e.label for e in proc.splits["dev"]])
    scores["overall"] = overall_score(scores)
    table["overall"] = {"score": scores["overall"]}
    print(f"{args.model}, dev:")
    print(format_table(table))
    return {"scores": scores, "table": table}


if __name__ == "__main__":
    main()
