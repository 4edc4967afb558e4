"""Whether two training runs are the same run: every tensor of their checkpoints and saved model, and every
metrics.jsonl record but the times. How a restructure shows it changed no number (docs/results.md):

    python tasks/multitask.py --max_examples 400 --epochs 2 --seed 11711 --no-predict_test --out_dir /tmp/before
    (the same at another commit, --out_dir /tmp/after)
    python benchmarks/same_run.py /tmp/before /tmp/after
"""
import argparse
import json
import sys
from pathlib import Path

from safetensors.torch import load_file

TIMES = ("seconds", "train_seconds", "wall_seconds", "resumes")  # what may differ between equal runs


def records(path: Path) -> list:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        out.append({k: v for k, v in record.items() if k not in TIMES})
    return out


def compare(a: Path, b: Path) -> list:
    """The differences, as lines; none when the runs are the same."""
    problems, n = [], 0
    for rel in sorted({str(p.relative_to(a)) for p in a.rglob("*.safetensors")}):
        if not (b / rel).is_file():
            problems.append(f"{rel}: only in {a}")
            continue
        x, y = load_file(str(a / rel)), load_file(str(b / rel))
        if x.keys() != y.keys():
            problems.append(f"{rel}: keys differ: {sorted(set(x) ^ set(y))[:5]}")
            continue
        bad = [k for k in x if x[k].dtype != y[k].dtype or x[k].shape != y[k].shape or not (x[k] == y[k]).all()]
        problems += [f"{rel}: {k} differs" for k in bad[:5]]
        n += len(x)
        print(f"{rel}: {len(x) - len(bad)} of {len(x)} tensors equal")
    ra, rb = records(a / "metrics.jsonl"), records(b / "metrics.jsonl")
    if ra != rb:
        problems.append("metrics.jsonl differs")
    print(f"metrics.jsonl: {len(ra)} records {'equal' if ra == rb else 'DIFFER'}; {n} tensors in all")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    args = p.parse_args(argv)
    problems = compare(args.a, args.b)
    print("\n".join(problems) if problems else "the same run")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
