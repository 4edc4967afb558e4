"""What the CLIs share: their flags, building the model and processors, training, and the final report.

`tasks/multitask.py` and `tasks/classifier.py` are thin: they choose tasks and files, then call `run`.
Flags: the model and data groups here, the training loop's from `TrainConfig`, each technique's from its
`Config` (tasks/techniques/). `--config run.json` reads flag values from a file (the command line wins), and
every run writes its resolved flags to <out_dir>/run_config.json, which `--config` takes back.
"""
from __future__ import annotations

import argparse
import copy as copy_module
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from minibert import BertModel, Tokenizer

from .. import techniques
from ..engine import TrainConfig, Trainer, seed_everything
from ..engine.checkpointing import atomic_write_text, load_state, read_jsonl, write_jsonl
from ..engine.config import add_dataclass_args, dataclass_from_args
from ..engine.devices import pick_device
from ..engine.distributed import init_distributed, leave_distributed
from ..engine.param_groups import reinit_top_layers
from .cli import Parser, config_tokens, configure_logging, fail
from .configs import DataConfig, HeadsConfig, ModelConfig, RunConfig
from ..domain.data import get_task, hold_out
from .inference import build_processor, dev_table, predict_and_write
from ..domain.metrics import format_table, overall_score
from ..domain.model import MultitaskBert
from ..domain.para_augment import augment_processor
from .run_lock import RESUMES, claim_out_dir
from ..domain.saved_model import save_model_folder

REPO = Path(__file__).resolve().parents[2]
SPLIT_FILES = {"train": "train", "dev": "dev", "test": "test-student"}


def base_parser(description: str, cli: str, **train_defaults) -> Parser:
    """The model, data and training flags, and those of every technique `cli` offers, each group a screen."""
    parser = Parser(description=description)
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="a JSON file of flag values, e.g. a run's run_config.json; the command line "
                             "overrides it (default: none)")
    add_dataclass_args(parser.add_argument_group("model"), ModelConfig)
    add_dataclass_args(parser.add_argument_group("data"), DataConfig)
    parser.group("data files", "each task's inputs and prediction files")  # filled by add_task_file_args
    add_dataclass_args(parser.add_argument_group("training"), TrainConfig, **train_defaults)
    techniques.add_technique_args(parser, cli)
    return parser


def parse_with_config(parser: Parser, argv=None) -> argparse.Namespace:
    """parse_args after the tokens of --config's file (tasks/launch/cli.py), so the command line wins and the file's
    values get the same checks; then the checks across flags (the techniques', the training loop's)."""
    configure_logging()
    argv = sys.argv[1:] if argv is None else list(argv)
    first, _ = parser.parse_known_args(argv)
    args = parser.parse_args((config_tokens(parser, first.config) if first.config else []) + argv)
    source = f" (flags from --config {first.config} and the command line)" if first.config else ""
    for problem in techniques.conflicts(args):
        parser.error(problem + source)
    try:
        dataclass_from_args(TrainConfig, args)
    except ValueError as err:
        parser.error(f"{err}{source}")
    return args


def resolved_flags(flags) -> dict:
    """Every flag's value (of the parsed Namespace, or a RunConfig's flags), as JSON: what run_config.json holds and
    --config reads back."""
    items = vars(flags).items() if isinstance(flags, argparse.Namespace) else flags.items()
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in items if k != "config"}


def write_run_config(flags, out_dir) -> None:
    """The flags in force, and after a --resume its record (at which step, what changed: tasks/launch/run_lock.py) under
    "resumes", which --config skips: the file does not claim a changed flag's new value for the whole run."""
    resumes = Path(out_dir) / RESUMES
    record = {"resumes": read_jsonl(resumes)} if resumes.is_file() else {}
    atomic_write_text(Path(out_dir) / "run_config.json",
                      json.dumps({**resolved_flags(flags), **record}, indent=1) + "\n")


def add_task_file_args(parser: argparse.ArgumentParser, prefix: str, task: str,
                       outputs: Optional[str] = "{prefix}-{split}-output.csv",
                       inputs: Sequence[str] = ("train", "dev", "test")) -> None:
    """--{prefix}_train/dev/test (those of `inputs`) and, unless `outputs` is None, --{prefix}_dev_out/test_out,
    as the coursework names them, in the "data files" group; `outputs` is the outputs' default name, for the help."""
    about = "each task's inputs" + (" and prediction files" if outputs else "")
    g = parser.group("data files", about) if isinstance(parser, Parser) else parser
    for split in inputs:
        g.add_argument(f"--{prefix}_{split}", default=None, metavar="FILE",
                       help=f"default: <data_dir>/{get_task(task).filename(SPLIT_FILES[split])}")
    for split in ("dev", "test") if outputs else ():
        g.add_argument(f"--{prefix}_{split}_out", default=None, metavar="FILE",
                       help=f"default: <predictions_dir>/{outputs.format(prefix=prefix, split=split)}")


def task_files(flags, prefix: str, task: str) -> Dict[str, str]:
    """The files of one task (from the parsed Namespace or a RunConfig's flags): each flag's, else its default; no
    outputs for a CLI without --predictions_dir."""
    flags = vars(flags) if isinstance(flags, argparse.Namespace) else flags
    files = {}
    for split in ("train", "dev", "test"):
        given = flags.get(f"{prefix}_{split}")
        files[split] = given or str(Path(flags["data_dir"]) / get_task(task).filename(SPLIT_FILES[split]))
    for split in ("dev", "test") if "predictions_dir" in flags else ():
        given = flags.get(f"{prefix}_{split}_out")
        files[f"{split}_out"] = given or str(Path(flags["predictions_dir"]) / f"{prefix}-{split}-output.csv")
    return files


def make_evaluator(processors: Dict[str, object], device) -> Callable[[torch.nn.Module], Dict[str, float]]:
    def evaluate(model) -> Dict[str, float]:
        scores = {name: p.score(p.predict(model, "dev", device), "dev") for name, p in processors.items()}
        return {**scores, "score": overall_score(scores)}
    return evaluate


def held_out_processor(processor, fraction: float):
    """Move a fixed share of the processor's training rows into a copy whose "dev" split they are."""
    rest, held = hold_out(processor.splits["train"], fraction)
    processor.splits["train"], processor._lengths = rest, None
    copy = copy_module.copy(processor)
    copy.splits = {"train": [], "dev": held, "test": []}
    return copy


def load_pretrained(cfg: ModelConfig) -> Tuple[Tokenizer, BertModel]:
    """The tokenizer and encoder --model names, built as the model flags say (dropout, attention, checkpointing)."""
    encoder = BertModel.from_pretrained(cfg.model, hidden_dropout_prob=cfg.hidden_dropout_prob,
                                        attn_implementation=cfg.attn_implementation,
                                        gradient_checkpointing=cfg.gradient_checkpointing)
    return Tokenizer.from_pretrained(cfg.model), encoder


def run(spec: RunConfig, tasks: List[str], files: Dict[str, Dict[str, str]], *more, **options) -> Dict[str, float]:
    """`train_and_predict` holding --out_dir (tasks/launch/run_lock.py): one run per folder, what killed writes left
    there removed, and --resume refused when a flag that changes the training differs from the checkpoint's."""
    rank, _, _ = init_distributed(spec.train.use_gpu)
    with claim_out_dir(spec.train, resolved_flags(spec.flags), Path(sys.argv[0]).name, main_process=rank == 0):
        return train_and_predict(spec, tasks, files, *more, **options)


def train_and_predict(spec: RunConfig, tasks: List[str], files: Dict[str, Dict[str, str]],
                      heads: HeadsConfig = HeadsConfig(), batch_sizes: Optional[Dict[str, int]] = None,
                      loss_weights: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    """Build the model and processors for `tasks`, run the phases, train, reload the best weights, write predictions.

    Under `torchrun --nproc_per_node N` every process trains (tasks/engine/distributed.py); rank 0 alone prints, predicts
    and writes files, and the other ranks return {} after training.
    """
    started = time.time()
    config, m, d = spec.train, spec.model, spec.data
    rank, world_size, _ = init_distributed(config.use_gpu)
    log = print if rank == 0 else (lambda *a, **k: None)
    seed_everything(config.seed)
    device = pick_device(config.use_gpu)
    tokenizer, encoder = load_pretrained(m)
    num_labels = get_task(tasks[0]).num_classes if tasks[0] in ("sst", "cfimdb") else 5
    model = MultitaskBert(encoder, tasks, num_labels=num_labels, pooling=m.pooling, para_head=heads.para_head,
                          sts_head=heads.sts_head, dropout=m.hidden_dropout_prob, max_length=m.max_length,
                          symmetric_pairs=heads.symmetric_pairs, tokenizer=tokenizer, sts_cosine_map=heads.sts_cosine_map,
                          head_dropout_samples=m.head_dropout_samples)
    if m.reinit_layers:  # after the heads' initialisation, which stays that of the default run
        reinit_top_layers(model.bert, m.reinit_layers)
    if m.option == "pretrain":
        for p in model.bert.parameters():
            p.requires_grad = False

    processors = {}
    for name in tasks:  # read as the model's head config says, the same path as tasks/predict.py
        splits = ("train", "dev", "test") if d.predict_test else ("train", "dev")
        try:
            processors[name] = build_processor(
                name, model, tokenizer, files[name], splits=splits, max_examples=d.max_examples,
                batch_size=(batch_sizes or {}).get(name) or d.batch_size, seed=config.seed,
                **({"loss_kind": heads.sts_loss} if name == "sts" else {}))
        except (OSError, ValueError) as err:  # a missing, unreadable or empty data file: the user's to fix
            fail(Path(sys.argv[0]).name, err)
        processors[name].loss_weight = (loss_weights or {}).get(name, 1.0)
        if name == "para" and heads.para_augment != "none":
            log(augment_processor(processors[name], files[name], heads.para_augment, heads.para_augment_cap,
                                  config.seed))
        sizes = {s: len(p) for s, p in processors[name].splits.items()}
        log(f"{name}: {sizes['train']} train / {sizes['dev']} dev / {sizes['test']} test examples")
    selection = processors
    if d.select_on == "heldout":  # choose the epoch on held-out training rows; dev is only reported
        selection = {name: held_out_processor(p, d.heldout_fraction) for name, p in processors.items()}
        log(", ".join(f"{n}: {len(p.splits['dev'])} training rows held out to select on" for n, p in selection.items()))
    if rank == 0:
        Path(config.out_dir).mkdir(parents=True, exist_ok=True)
        write_run_config(spec.flags, config.out_dir)

    parts = techniques.RunParts(model=model, processors=processors, selection=selection, tokenizer=tokenizer,
                                train_config=config, batch_size=d.batch_size, max_length=m.max_length,
                                checkpoint=m.model, is_main=rank == 0)
    before_scores = techniques.before_finetuning(spec.techniques, parts)  # the phases (DAE, contrastive), if asked
    if not techniques.finetunes(spec.techniques):  # phases only: they saved the encoder
        leave_distributed()
        return before_scores if rank == 0 else {}

    meta = {"model": m.model, "heads": model.head_config(), "bert_config": encoder.config.to_dict(),
            "argv": sys.argv[1:], "flags": resolved_flags(spec.flags)}
    trainer = Trainer(model, techniques.wrap_processors(spec.techniques, model, processors), config,
                      make_evaluator(selection, device), techniques.callbacks(spec.techniques, model, config.seed),
                      checkpoint_meta=meta)
    history = trainer.fit()
    if rank != 0:
        leave_distributed()
        return {}

    best = load_state(Path(config.out_dir) / "best.safetensors")
    model.load_state_dict(best["model"])
    model.to(device)
    scores = predict_and_write(model, processors, files, device)
    scores["overall"] = overall_score(scores)
    folder = save_model_folder(model, tokenizer, Path(config.out_dir) / "model", card=dict(
        base_checkpoint=m.model, argv=sys.argv, epoch=best["epoch"], dev_scores=scores,
        data_sizes={n: {s: len(v) for s, v in p.splits.items()} for n, p in processors.items()}))
    wall = time.time() - started
    print(f"\nbest: epoch {best['epoch']}, step {best['step']} of {trainer.progress.global_step}; dev scores "
          f"({wall / 60:.1f} min in all):")
    print(format_table(dev_table(scores)))
    print(f"the model: {folder} (python tasks/predict.py --model {folder}); predictions written to {', '.join(sorted({str(Path(f[k]).parent) for f in files.values() for k in ('dev_out', 'test_out')}))}")
    resumes = Path(config.out_dir) / RESUMES  # each --resume of this run, with what it changed (tasks/launch/run_lock.py)
    final = {"final": True, "best_epoch": best["epoch"], "best_step": best["step"], "dev": scores,
             "wall_seconds": round(wall, 1), "device": str(device), "processes": world_size,
             **({"before_finetuning": before_scores} if before_scores else {}),
             **({"resumes": read_jsonl(resumes)} if resumes.is_file() else {})}
    write_jsonl(Path(config.out_dir) / "metrics.jsonl", history + [final])
    leave_distributed()
    return scores

