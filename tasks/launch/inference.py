"""Predicting with a model: one path for the end of training and for tasks/predict.py and tasks/evaluate.py.

The processors are built from the model's own head config (pair form, both orders, max_length), so a saved
model reads its input as it did in training; predictions go through the processors' `predict` (batches of
similar length, in file order, with a progress bar) and are written as the coursework's `id,Predicted_*` files.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

from tqdm.auto import tqdm

from minibert import CheckpointError

from .cli import fail
from ..domain.data import get_task
from ..domain.metrics import overall_score
from ..domain.model import MultitaskBert
from ..domain.processors import PROCESSORS, Processor

INPUT_OPTIONS = ("form", "symmetric", "max_length")


def processor_options(heads: Mapping, name: str) -> dict:
    """How task `name` must read its input for a model with these heads (`MultitaskBert.head_config()`)."""
    options = {"max_length": heads.get("max_length", 128)}
    symmetric = bool(heads.get("symmetric_pairs", False))
    if name == "para":
        options.update(form=heads["para_head"], symmetric=symmetric)
    elif name == "sts":
        cross = heads["sts_head"] == "cross"
        options.update(form="cross" if cross else "siamese", symmetric=symmetric and cross)
    return options


def build_processor(name: str, model: MultitaskBert, tokenizer, files: Mapping[str, str],
                    splits: Sequence[str] = ("dev", "test"), **kw) -> Processor:
    """The processor of task `name` over `files` (keys train/dev/test; only `splits` are read), set up to read
    input as `model` does; `kw` are the other Processor settings (batch_size, seed, max_examples, loss_kind)."""
    clash = set(kw) & set(INPUT_OPTIONS)
    if clash:
        raise TypeError(f"{sorted(clash)} come from the model's head config, not from the caller")
    paths = {s: files.get(s) if s in splits else None for s in ("train", "dev", "test")}
    return PROCESSORS[name].from_files(name, tokenizer, **paths, **processor_options(model.head_config(), name), **kw)


def predict_split(proc: Processor, model, split: str, device) -> List:
    """`proc.predict` with a progress bar over its examples: a saved model's dev and test sets take a minute on a
    CPU (tasks/predict.py, tasks/evaluate.py, the end of training)."""
    with tqdm(total=len(proc.splits[split]), desc=f"predicting {proc.name} {split}", unit="ex", mininterval=2.0,
              dynamic_ncols=True, leave=False) as bar:
        return proc.predict(model, split, device, progress=bar.update)


def predict_and_write(model, processors: Mapping[str, Processor], files: Mapping[str, Mapping[str, str]], device,
                      splits: Sequence[str] = ("dev", "test")) -> Dict[str, float]:
    """Predict each processor's dev and test examples, write files[task]["{split}_out"], return the dev scores."""
    scores = {}
    for name, proc in processors.items():
        for split in splits:
            if not proc.splits[split]:
                continue
            preds = predict_split(proc, model, split, device)
            if f"{split}_out" in files[name]:
                proc.write(files[name][f"{split}_out"], preds, split)
            if split == "dev" and all(e.label is not None for e in proc.splits["dev"]):
                scores[name] = proc.score(preds, "dev")
    return scores


def dev_table(scores: Mapping[str, float]) -> Dict[str, Dict[str, float]]:
    """Rows for `metrics.format_table`: each task's metric, then the coursework's overall score."""
    table = {name: {get_task(name).metric: value} for name, value in scores.items() if name != "overall"}
    table["overall"] = {"score": overall_score({k: v for k, v in scores.items() if k != "overall"})}
    return table


def load_or_exit(name_or_path, prog: str, allow_no_heads: bool = False) -> MultitaskBert:
    """For the CLIs: the model, or exit with the loader's message (`prog: error: ...`, no traceback for a wrong
    --model)."""
    try:
        return MultitaskBert.from_pretrained(name_or_path, allow_no_heads=allow_no_heads)
    except (CheckpointError, OSError, ValueError) as err:  # OSError: a missing folder, weights or vocab.txt
        fail(prog, err)


def model_tasks(model: MultitaskBert, wanted, prog: str) -> list:
    """The tasks to run: `wanted` (a subset of the model's) or all of the model's."""
    missing = [t for t in wanted or () if t not in model.tasks]
    if missing:
        fail(prog, f"the model has no head for {', '.join(missing)} (its tasks: {', '.join(model.tasks)})")
    return list(wanted or model.tasks)
