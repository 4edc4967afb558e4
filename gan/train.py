"""Semi-supervised sentiment classification with GAN-BERT or AC-GAN-BERT, on SST-5 and/or CFIMDB.

    python gan/train.py --use_gpu                                          # AC-GAN-BERT, SST-5, 10% labelled
    python gan/train.py --method ganbert --labeled_fraction 0.01 --unlabeled_fraction 0.5
    python gan/train.py --method plain --tasks sst cfimdb                  # the baseline, same budget

Methods: plain (the encoder + D's classifier on the labelled rows only), ganbert, acganbert.
`--labeled_fraction` of each class keeps its labels; `--unlabeled_fraction` of the rest joins unlabelled.
Each run writes predictions/gan/{task}-{dev,test}-output.csv and, under --out_dir/{task}-{method},
metrics.jsonl (per epoch: dev accuracy and every loss term; then the final scores), curves.png,
best.safetensors and last.safetensors (for --resume). The loop is the shared one (tasks/engine/trainer.py).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable, not this folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


from minibert import BertConfig, BertModel  # noqa: E402
from tasks.domain.data import get_task  # noqa: E402
from tasks import techniques  # noqa: E402
from tasks.engine.checkpointing import load_state, write_jsonl  # noqa: E402
from tasks.engine.devices import pick_device  # noqa: E402
from tasks.launch.run import (REPO, add_task_file_args, base_parser, load_pretrained, make_evaluator,  # noqa: E402
                       parse_with_config, resolved_flags, task_files)
from tasks.launch.cli import fail  # noqa: E402
from tasks.launch.run_lock import claim_out_dir  # noqa: E402
from tasks.launch.configs import RunConfig  # noqa: E402
from tasks.engine.config import add_dataclass_args, dataclass_from_args  # noqa: E402
from tasks.engine import seed_everything  # noqa: E402

import torch  # noqa: E402

from gan.data import SemiSupervisedConfig, semi_supervised  # noqa: E402
from gan.frozen import embed_examples  # noqa: E402
from gan.probe import fake_probe  # noqa: E402
from gan.model import GanBert, GanConfig  # noqa: E402
from gan.trainer import GanTrainer  # noqa: E402

TASKS = ("sst", "cfimdb")


def build_parser():
    parser = base_parser(__doc__.splitlines()[0], "gan", out_dir="runs/gan", epochs=3, lr=5e-5)
    parser.set_defaults(predictions_dir=str(REPO / "predictions" / "gan"))
    g = parser.add_argument_group("semi-supervised data")
    g.add_argument("--tasks", nargs="+", choices=TASKS, default=["sst"], metavar="TASK",
                   help=f"train one model on each of these ({', '.join(TASKS)})")
    add_dataclass_args(g, SemiSupervisedConfig)
    add_dataclass_args(parser.add_argument_group("GAN (method: plain | ganbert | acganbert)"), GanConfig)
    for name in TASKS:
        add_task_file_args(parser, name, name)
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parse_with_config(parser, argv)
    try:
        for cls in (GanConfig, SemiSupervisedConfig):
            dataclass_from_args(cls, args)
    except ValueError as err:
        parser.error(str(err))
    return args


def build_model(meta: dict) -> GanBert:
    """A GanBert with random weights shaped as a checkpoint's meta says (then load_state_dict)."""
    encoder = BertModel(BertConfig.from_dict(meta["bert_config"]))
    return GanBert(encoder, meta["num_labels"], GanConfig(**meta["gan"]), pooling=meta["pooling"])


def load_checkpoint(path):
    """(model, meta) from a best.safetensors or last.safetensors written by this CLI."""
    state = load_state(path)
    model = build_model(state["meta"])
    model.load_state_dict(state["model"])
    return model, state["meta"]


def with_fake_probe(evaluate, proc, tokenizer, max_length: int, device):
    """The evaluation plus, for a GAN, what its generator's fakes look like against the real dev embeddings of the
    current encoder (gan/probe.py's fake_probe: label read back by a probe, spread, coverage), every evaluation."""
    def evaluate_with_probe(model):
        scores = evaluate(model)
        if getattr(model, "generator", None) is not None and proc.splits["dev"]:
            real = embed_examples(model.encoder, proc.splits["dev"], tokenizer, max_length, device)
            labels = torch.tensor([e.label for e in proc.splits["dev"]])
            scores["fakes"] = fake_probe(model, real, labels, seed=0)
        return scores
    return evaluate_with_probe


def run_gan(spec: RunConfig, task: str, files: dict, show_progress: bool = True) -> dict:
    """train_gan holding --out_dir (tasks/launch/run_lock.py): one run per folder, --resume's flags checked."""
    with claim_out_dir(spec.train, resolved_flags(spec.flags), Path(sys.argv[0]).name):
        return train_gan(spec, task, files, show_progress)


def train_gan(spec: RunConfig, task: str, files: dict, show_progress: bool = True) -> dict:
    """Train one model on one task, reload its best epoch, write predictions; returns its scores and data sizes."""
    started = time.time()
    config, m, d = spec.train, spec.model, spec.data
    gan, semi = spec.of(GanConfig), spec.of(SemiSupervisedConfig)
    seed_everything(config.seed)
    device = pick_device(config.use_gpu)
    tokenizer, encoder = load_pretrained(m)
    num_labels = get_task(task).num_classes
    model = GanBert(encoder, num_labels, gan, pooling=m.pooling)
    if m.option == "pretrain":
        for p in model.encoder.parameters():
            p.requires_grad = False
    try:
        proc = semi_supervised(task, tokenizer, files, semi.labeled_fraction, semi.unlabeled_fraction, gan.method,
                               semi.replicate, config.seed, d.max_examples, d.batch_size, m.max_length)
    except (OSError, ValueError) as err:  # a missing, unreadable or empty data file: the user's to fix
        fail(Path(sys.argv[0]).name, err)
    s = proc.stats
    print(f"{task} ({gan.method}): {s['labeled']} labelled (x{s['replicate']}) + {s['unlabeled']} unlabelled train rows, "
          f"{s['steps_per_epoch']} steps per epoch; {len(proc.splits['dev'])} dev / {len(proc.splits['test'])} test")

    meta = {"model": m.model, "task": task, "num_labels": num_labels, "pooling": m.pooling,
            "gan": dataclasses.asdict(gan), "bert_config": encoder.config.to_dict(), "data": s,
            "labeled_fraction": semi.labeled_fraction, "unlabeled_fraction": semi.unlabeled_fraction,
            "seed": config.seed, "argv": sys.argv[1:], "flags": resolved_flags(spec.flags)}
    if d.predict_test is False:
        proc.splits["test"] = []
    trainer = GanTrainer(model, {task: proc}, config, with_fake_probe(make_evaluator({task: proc}, device), proc, tokenizer,
                                                                      m.max_length, device),
                         techniques.callbacks(spec.techniques, model, config.seed), meta, show_progress)
    history = trainer.fit()

    out_dir = Path(config.out_dir)
    best = load_state(out_dir / "best.safetensors")
    model.load_state_dict(best["model"])
    model.to(device)
    scores = {}
    for split in ("dev", "test"):
        if proc.splits[split]:
            preds = proc.predict(model, split, device)
            proc.write(files[f"{split}_out"], preds, split)
            if split == "dev":
                scores["dev_accuracy"] = proc.score(preds, "dev")
    wall = time.time() - started
    kept = next((h for h in history if h["step"] == best["step"]), {})
    fakes = kept.get("dev", {}).get("fakes", {})  # the kept evaluation's probe of G's fakes (a GAN only)
    result = {**scores, "best_epoch": best["epoch"], "epochs": len(history), **s, **fakes, "wall_seconds": round(wall, 1)}
    write_jsonl(out_dir / "metrics.jsonl", history + [{"final": True, "dev": {task: scores.get("dev_accuracy")}, **result,
                                                      "device": str(device)}])
    from gan.plots import plot_curves  # matplotlib: imported when there is a curve to draw, not for --help
    plot_curves(out_dir / "metrics.jsonl", out_dir / "curves.png")
    print(f"best epoch {best['epoch']} of {len(history)}, dev accuracy {scores.get('dev_accuracy', float('nan')):.4f} "
          f"({wall / 60:.1f} min)")
    return result


def main(argv=None):
    args = parse_args(argv)
    results = {}
    spec = RunConfig.from_args(args, "gan")
    for name in args.tasks:  # each task its own run, in its own folder
        one = spec.with_flags(out_dir=os.path.join(args.out_dir, f"{name}-{args.method}"))
        print(f"=== {name} ({args.method}, {args.labeled_fraction:.0%} labelled) ===")
        results[name] = run_gan(one, name, task_files(args, name, name))
    print("dev accuracy: " + ", ".join(f"{k} {v.get('dev_accuracy', float('nan')):.4f}" for k, v in results.items()))
    return results


if __name__ == "__main__":
    main()
