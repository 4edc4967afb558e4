"""What the CLIs share: their flags, building the model and processors, training, and the final report.

`tasks/multitask.py` and `tasks/classifier.py` are thin: they choose tasks and files, then call `run`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
from pathlib import Path
from typing import Dict, List, Optional

import torch

from minibert import BertModel, Tokenizer

from .techniques.adversarial import add_adversarial_args, adversarial_processors
from .data import get_task
from .metrics import format_table, overall_score
from .model import POOLINGS, MultitaskBert
from .techniques.phases import add_phase_args, run_phases, save_encoder
from .processors import PROCESSORS
from .trainer import TrainConfig, Trainer, init_distributed, pick_device, seed_everything

REPO = Path(__file__).resolve().parent.parent
SPLIT_FILES = {"train": "train", "dev": "dev", "test": "test-student"}


def add_dataclass_args(parser: argparse.ArgumentParser, cls, **defaults) -> None:
    """One --flag per dataclass field, typed from its annotation; `defaults` override the dataclass's."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        default = defaults.get(field.name, field.default)
        kind = hints[field.name]
        if kind is bool:
            parser.add_argument(f"--{field.name}", action=argparse.BooleanOptionalAction, default=default)
            continue
        if typing.get_origin(kind) is typing.Union:  # Optional[X]
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        parser.add_argument(f"--{field.name}", type=kind, default=default)


def dataclass_from_args(cls, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def base_parser(description: str, **train_defaults) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="checkpoint: none = the embedded all-MiniLM-L6-v2, a local folder, or a hub id (bert-base-uncased)")
    g.add_argument("--option", choices=("pretrain", "finetune"), default="finetune",
                   help="pretrain: freeze the encoder, train the heads only; finetune: update everything")
    g.add_argument("--hidden_dropout_prob", type=float, default=0.1)
    g.add_argument("--pooling", choices=POOLINGS, default="mean")
    g.add_argument("--max_length", type=int, default=128, help="tokens per sentence (or per joined pair)")
    g.add_argument("--attn_implementation", choices=("sdpa", "manual"), default="sdpa",
                   help="sdpa: torch's fused attention; manual: the written-out softmax(q kᵀ/√d) v")
    g.add_argument("--gradient_checkpointing", action=argparse.BooleanOptionalAction, default=False,
                   help="recompute each layer's activations in the backward pass: less memory, more time (large models)")
    g = parser.add_argument_group("data")
    g.add_argument("--data_dir", default=str(REPO / "data"), help="folder with the CS224N files")
    g.add_argument("--max_examples", type=int, default=None, help="use a fixed random N examples of each file (quick runs)")
    g.add_argument("--batch_size", type=int, default=32)
    g.add_argument("--predictions_dir", default=str(REPO / "predictions"))
    g.add_argument("--predict_test", action=argparse.BooleanOptionalAction, default=True,
                   help="also predict the unlabelled test split (--no-predict_test: dev only, e.g. for ablations)")
    add_dataclass_args(parser.add_argument_group("training"), TrainConfig, **train_defaults)
    add_phase_args(parser)
    add_adversarial_args(parser)
    return parser


def add_task_file_args(parser: argparse.ArgumentParser, prefix: str, task: str) -> None:
    """--{prefix}_train/dev/test and --{prefix}_dev_out/test_out, as the coursework names them."""
    for split in ("train", "dev", "test"):
        parser.add_argument(f"--{prefix}_{split}", default=None,
                            help=f"default: <data_dir>/{get_task(task).filename(SPLIT_FILES[split])}")
    for split in ("dev", "test"):
        parser.add_argument(f"--{prefix}_{split}_out", default=None,
                            help=f"default: <predictions_dir>/{prefix}-{split}-output.csv")


def task_files(args, prefix: str, task: str) -> Dict[str, str]:
    files = {}
    for split in ("train", "dev", "test"):
        given = getattr(args, f"{prefix}_{split}", None)
        files[split] = given or str(Path(args.data_dir) / get_task(task).filename(SPLIT_FILES[split]))
    for split in ("dev", "test"):
        given = getattr(args, f"{prefix}_{split}_out", None)
        files[f"{split}_out"] = given or str(Path(args.predictions_dir) / f"{prefix}-{split}-output.csv")
    return files


def make_evaluator(processors: Dict[str, object], device) -> typing.Callable:
    def evaluate(model) -> Dict[str, float]:
        scores = {name: p.score(p.predict(model, "dev", device), "dev") for name, p in processors.items()}
        return {**scores, "score": overall_score(scores)}
    return evaluate


def run(args, tasks: List[str], files: Dict[str, Dict[str, str]], batch_sizes: Optional[Dict[str, int]] = None,
        para_head: str = "cross", sts_head: str = "cosine", sts_loss: str = "mse",
        symmetric_pairs: bool = False, loss_weights: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    """Build the model and processors for `tasks`, train, reload the best epoch, score dev, write predictions.

    Under `torchrun --nproc_per_node N` every process trains (see tasks/trainer.py); rank 0 alone prints, predicts
    and writes files, and the other ranks return {} after training.
    """
    started = time.time()
    config = dataclass_from_args(TrainConfig, args)
    rank, world_size, _ = init_distributed(config.use_gpu)
    log = print if rank == 0 else (lambda *a, **k: None)
    seed_everything(config.seed)
    device = pick_device(config.use_gpu)
    tokenizer = Tokenizer.from_pretrained(args.model)
    encoder = BertModel.from_pretrained(args.model, hidden_dropout_prob=args.hidden_dropout_prob,
                                        attn_implementation=getattr(args, "attn_implementation", "sdpa"),
                                        gradient_checkpointing=getattr(args, "gradient_checkpointing", False))
    num_labels = get_task(tasks[0]).num_classes if tasks[0] in ("sst", "cfimdb") else 5
    model = MultitaskBert(encoder, tasks, num_labels=num_labels, pooling=args.pooling, para_head=para_head,
                          sts_head=sts_head, dropout=args.hidden_dropout_prob)
    if args.option == "pretrain":
        for p in model.bert.parameters():
            p.requires_grad = False

    processors = {}
    for name in tasks:
        extra = {"para": {"form": para_head, "symmetric": symmetric_pairs},
                 "sts": {"form": "cross" if sts_head == "cross" else "siamese", "loss_kind": sts_loss,
                         "symmetric": symmetric_pairs and sts_head == "cross"}}.get(name, {})
        processors[name] = PROCESSORS[name].from_files(
            name, tokenizer, train=files[name]["train"], dev=files[name]["dev"],
            test=files[name]["test"] if getattr(args, "predict_test", True) else None,
            max_examples=args.max_examples, batch_size=(batch_sizes or {}).get(name) or args.batch_size,
            max_length=args.max_length, seed=config.seed, **extra)
        processors[name].loss_weight = (loss_weights or {}).get(name, 1.0)
        sizes = {s: len(p) for s, p in processors[name].splits.items()}
        log(f"{name}: {sizes['train']} train / {sizes['dev']} dev / {sizes['test']} test examples")

    phase_scores = run_phases(args, model, processors, tokenizer, config)  # DAE / contrastive, if asked for
    if "finetune" not in getattr(args, "phases", ("finetune",)):
        if rank == 0:
            folder = save_encoder(model.bert, args.model, Path(config.out_dir) / "encoder")
            print(f"phases {', '.join(args.phases)} done; encoder saved to {folder} (pass it as --model)")
        return _finish(world_size, phase_scores if rank == 0 else {})

    evaluate = make_evaluator(processors, device)
    meta = {"model": args.model, "heads": model.head_config(), "bert_config": encoder.config.to_dict(),
            "argv": sys.argv[1:]}
    trainer = Trainer(model, adversarial_processors(args, model, processors), config, evaluate, checkpoint_meta=meta)
    history = trainer.fit()
    if rank != 0:
        return _finish(world_size, {})

    best = torch.load(Path(config.out_dir) / "best.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(best["model"])
    model.to(device)
    table, scores = {}, {}
    for name, proc in processors.items():
        for split in ("dev", "test"):
            if proc.splits[split]:
                preds = proc.predict(model, split, device)
                proc.write(files[name][f"{split}_out"], preds, split)
                if split == "dev":
                    scores[name] = proc.score(preds, "dev")
                    table[name] = {get_task(name).metric: scores[name]}
    scores["overall"] = overall_score({k: v for k, v in scores.items()})
    table["overall"] = {"score": scores["overall"]}
    wall = time.time() - started
    print(f"\nbest epoch {best['epoch']} of {len(history)}, dev scores ({wall / 60:.1f} min in all):")
    print(format_table(table))
    print(f"predictions written to {', '.join(sorted({str(Path(f[k]).parent) for f in files.values() for k in ('dev_out', 'test_out')}))}")
    with open(Path(config.out_dir) / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"final": True, "best_epoch": best["epoch"], "dev": scores, "wall_seconds": round(wall, 1),
                            "device": str(device), "processes": world_size,
                            **({"phases": phase_scores} if phase_scores else {})}) + "\n")
    return _finish(world_size, scores)


def _finish(world_size: int, result):
    """Leave the process group (under torchrun) and return `result`."""
    if world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return result
