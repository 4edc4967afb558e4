"""A fine-tuned model kept as one folder, in HuggingFace's layout plus our heads.

    config.json         the BERT config with HF's names, plus a "minibert_heads" block (tasks, heads, labels)
    model.safetensors   the encoder under HF's key names, each task head under `heads.`
    vocab.txt, tokenizer_config.json, special_tokens_map.json
    README.md           the model card: where it came from, its data, how it was trained, its dev scores

`transformers.BertModel.from_pretrained(folder)` reads the encoder (and reports the `heads.` weights as
unused); `MultitaskBert.from_pretrained(folder)` rebuilds encoder, heads and tokenizer. Loading goes through
minibert/checkpoint.py, so a wrong or partial folder fails with one error listing every bad key.
"""
from __future__ import annotations

import datetime
import json
import os
import shlex
import shutil
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import torch

from minibert import BertModel, Tokenizer
from minibert.checkpoint import CheckpointError, _check_and_load, hf_to_minibert, minibert_to_hf, read_state_dict
from minibert.config import BertConfig
from minibert.hub import EMBEDDED_NAME, resolve_model_dir

from .checkpointing import usual_mode
from .data import get_task
from .model import MultitaskBert

HEADS_KEY = "minibert_heads"
HEAD_PREFIX = "heads."
LABEL_NAMES = {
    "sst": ["very negative", "negative", "neutral", "positive", "very positive"],
    "cfimdb": ["negative", "positive"],
    "para": ["not a paraphrase", "paraphrase"],
    "sts": "similarity from 0 (unrelated) to 5 (same meaning), a float",
}
_BUILD_ARGS = ("tasks", "num_labels", "pooling", "para_head", "sts_head", "dropout", "max_length", "symmetric_pairs",
               "sts_cosine_map", "sentiment_head")


class NoHeadsError(CheckpointError):
    """A plain encoder checkpoint where a fine-tuned model (with trained task heads) is needed."""


# ----------------------------------------------------------------------------- saving

def heads_block(model: MultitaskBert) -> dict:
    """The config.json block that rebuilds the heads: `head_config()` plus the label names of each task."""
    return {**model.head_config(), "labels": {t: LABEL_NAMES[t] for t in model.tasks}}


def save_model_folder(model: MultitaskBert, tokenizer: Tokenizer, folder, card: Optional[dict] = None) -> Path:
    """Write the model folder, atomically: into a hidden sibling first, which then replaces `folder`.

    `card` describes the run for README.md: base_checkpoint, argv (sys.argv), data_sizes ({task: {split: n}}),
    dev_scores ({task: score}, "overall" too), epoch. Training-only heads (e.g. contrastive projections)
    are left out: only the heads the model was built with are kept.
    """
    model = getattr(model, "module", model)  # DDP and AveragedModel (EMA) keep the model as .module
    if tokenizer is None:
        raise ValueError("save_model_folder needs the tokenizer: the folder must hold the vocabulary it was trained with")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        config = {**model.bert.config.to_dict(), HEADS_KEY: heads_block(model)}
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _write_weights(model, tmp / "model.safetensors")
        _write_tokenizer(tokenizer, tmp, model.bert.config.vocab_size)
        (tmp / "README.md").write_text(model_card(model, card or {}), encoding="utf-8")
        if folder.exists():  # swap: the old folder is renamed aside, so the new one is never half-written
            old = folder.parent / f".{folder.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _write_weights(model: MultitaskBert, path: Path) -> None:
    from safetensors.torch import save_file

    cpu = lambda t: t.detach().contiguous().cpu()  # noqa: E731
    state = minibert_to_hf({k: cpu(v) for k, v in model.bert.state_dict().items()})
    for name in model.task_heads:
        state.update({f"{HEAD_PREFIX}{name}.{k}": cpu(v) for k, v in model.heads[name].state_dict().items()})
    save_file(state, str(path), metadata={"format": "pt"})
    usual_mode(path)


def _write_tokenizer(tokenizer: Tokenizer, folder: Path, vocab_size: int) -> None:
    """vocab.txt (line number = id) and the settings `Tokenizer.from_pretrained` and HF's BertTokenizer read.

    A vocabulary with a token on two lines has no token for the first id (the later line wins, here as in
    HF); a placeholder keeps that line, so every id stays on its own line number.
    """
    tokens = tokenizer.convert_ids_to_tokens(list(range(max(vocab_size, len(tokenizer)))))
    while tokens and tokens[-1] is None:
        tokens.pop()
    tokens = [f"[minibert-unused{i}]" if t is None else t for i, t in enumerate(tokens)]
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    normalizer = getattr(getattr(tokenizer, "_tok", None), "normalizer", None)
    settings = dict(tokenizer_class="BertTokenizer", do_lower_case=tokenizer.do_lower_case,
                    strip_accents=getattr(normalizer, "strip_accents", None),
                    tokenize_chinese_chars=getattr(normalizer, "handle_chinese_chars", True),
                    model_max_length=tokenizer.model_max_length, **tokenizer.special)
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(tokenizer.special, indent=2) + "\n", encoding="utf-8")


def model_card(model: MultitaskBert, card: dict) -> str:
    """README.md: small and factual, from the model itself and what the training run knows."""
    heads, config = model.head_config(), model.bert.config
    base = card.get("base_checkpoint") or EMBEDDED_NAME
    argv = card.get("argv")
    command = card.get("command") or ("python " + " ".join(shlex.quote(str(a)) for a in argv) if argv else "(not recorded)")
    scores, sizes = card.get("dev_scores") or {}, card.get("data_sizes") or {}
    lines = [f"# minibert fine-tuned model: {', '.join(model.tasks) or 'no task heads'}", "",
             f"Fine-tuned from `{base}` with minibert; written {card.get('date') or datetime.date.today().isoformat()}"
             + (f" from epoch {card['epoch']}." if card.get("epoch") is not None else "."), "",
             "## Tasks and outputs", "", "| task | output | labels |", "| --- | --- | --- |"]
    outputs = {"sst": "sentiment class", "cfimdb": "sentiment class", "para": "paraphrase or not", "sts": "similarity"}
    for t in model.tasks:
        labels = LABEL_NAMES[t] if isinstance(LABEL_NAMES[t], str) else ", ".join(f"{i} {n}" for i, n in enumerate(LABEL_NAMES[t]))
        lines.append(f"| {t} | {outputs[t]} | {labels} |")
    lines += ["", "## Dev scores", "", "| task | metric | dev |", "| --- | --- | ---: |"]
    lines += [f"| {t} | {get_task(t).metric if t != 'overall' else 'coursework overall'} | {v:.4f} |"
              for t, v in scores.items()] or ["| (not recorded) | | |"]
    lines += ["", "## Data (examples used)", "", "| task | train | dev | test |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {t} | {n.get('train', '')} | {n.get('dev', '')} | {n.get('test', '')} |" for t, n in sizes.items()] \
        or ["| (not recorded) | | | |"]
    lines += ["", "## How it was trained", "", "```", command, "```", "",
              f"Encoder: {config.num_hidden_layers} layers, {config.hidden_size} wide, {config.num_attention_heads} "
              f"attention heads. Sentence embedding: {heads['pooling']} pooling; paraphrase head: {heads['para_head']}; "
              f"similarity head: {heads['sts_head']}; inputs cut to {heads['max_length']} tokens"
              f"{'; pairs predicted in both orders' if heads['symmetric_pairs'] else ''}"
              f"{'; similarity 5 · (cos + 1) / 2' if heads.get('sts_cosine_map') == 'affine' else ''}.", "",
              "## Use", "", "```", "python tasks/predict.py --model FOLDER     # the coursework prediction files",
              "python tasks/evaluate.py --model FOLDER    # dev scores", "```", "",
              "In Python: `MultitaskBert.from_pretrained(FOLDER)` (tasks/model.py), then `predict_sentiment([...])`, "
              "`predict_paraphrase(a, b)`, `predict_similarity(a, b)` or `encode([...])`. "
              "`transformers.BertModel.from_pretrained(FOLDER)` loads the encoder alone.", "",
              "## Intended use and limits", "",
              "- For coursework and study: a small model fine-tuned on the CS224N files (SST-5 movie-review phrases, "
              "CFIMDB reviews, Quora question pairs, STS benchmark), all English.",
              "- The scores above are on those dev sets; expect less on other text. Longer inputs are truncated.",
              "- Not for decisions about people: it has not been checked for bias or robustness.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- loading

def load_model_folder(name_or_path=None, allow_no_heads: bool = False, **config_overrides) -> MultitaskBert:
    """MultitaskBert (encoder, heads, tokenizer) from a saved folder, or a head-less one from a plain encoder
    checkpoint when `allow_no_heads` (for `encode`); in eval mode."""
    folder = resolve_model_dir(name_or_path)
    config_path = folder / "config.json"
    config = BertConfig.from_json_file(config_path, **config_overrides)
    block = json.loads(config_path.read_text(encoding="utf-8")).get(HEADS_KEY)
    state, source = read_state_dict(folder)
    head_state = {k[len(HEAD_PREFIX):]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    if block is None:
        if head_state:
            raise CheckpointError(f"{source} holds head weights but {config_path} has no '{HEADS_KEY}' block to build them")
        if not allow_no_heads:
            raise NoHeadsError(
                f"{name_or_path or EMBEDDED_NAME} ({folder}) is a plain encoder checkpoint with no trained task heads, so "
                "its predictions would be random. Fine-tune it first (python tasks/multitask.py) and pass the model "
                "folder that run writes; only encoding (tasks/embed.py, model.encode) works on a plain encoder.")
        block = {"tasks": []}
    if not isinstance(block, dict) or not set(_BUILD_ARGS) >= set(block) - {"labels"}:
        raise CheckpointError(f"{config_path}: '{HEADS_KEY}' must be an object with keys among {list(_BUILD_ARGS)} "
                              f"and 'labels', got {block!r}")
    try:
        model = MultitaskBert(BertModel(config), **{k: v for k, v in block.items() if k != "labels"},
                              tokenizer=Tokenizer.from_pretrained(folder))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{config_path}: the '{HEADS_KEY}' block does not build a model: {err}") from None
    ours, unexpected = hf_to_minibert({k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)})
    ours = {"bert." + k: v for k, v in ours.items() if not k.startswith("mlm.")}  # an MLM head is dropped
    _fill_missing_pooler(model, ours, source)
    ours.update({HEAD_PREFIX + k: v for k, v in head_state.items()})
    _check_and_load(model, ours, unexpected, source)
    return model.eval()


def _fill_missing_pooler(model: MultitaskBert, ours: Dict[str, torch.Tensor], source: Path) -> None:
    """Some HF checkpoints have no pooler: it keeps its initial values, with a warning, as in the encoder loader."""
    missing: List[str] = [k for k in model.state_dict() if k.startswith("bert.pooler.") and k not in ours]
    if missing:
        warnings.warn(f"{source} has no {', '.join(missing)}; they keep their initial values")
        ours.update({k: model.state_dict()[k] for k in missing})
