"""A fine-tuned model kept as one folder, in HuggingFace's layout plus our heads.

    config.json         the BERT config with HF's names, plus a "minibert_heads" block (tasks, heads, labels)
    model.safetensors   the encoder alone, under HF's key names
    heads.safetensors   the task heads, under `heads.` (folders written before kept them in model.safetensors)
    vocab.txt, tokenizer_config.json, special_tokens_map.json
    modules.json, sentence_bert_config.json, 1_Pooling/ (and 2_Dense/ for --pooling pooler)
                        sentence-transformers' description of `encode`: max length, pooling, no normalisation
    README.md           the model card: the hub's YAML header, then where it came from, its data, its dev scores

`transformers.BertModel.from_pretrained(folder)` reads the encoder with no unused key;
`sentence_transformers.SentenceTransformer(folder)` embeds as `MultitaskBert.encode` does;
`MultitaskBert.from_pretrained(folder)` rebuilds encoder, heads and tokenizer. Loading goes through
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
from typing import TYPE_CHECKING, Dict, List, Optional

import torch

from minibert import BertModel, Tokenizer
from minibert.checkpoint import CheckpointError, _check_and_load, hf_to_minibert, minibert_to_hf, read_state_dict
from minibert.config import BertConfig
from minibert.hub import EMBEDDED_NAME, resolve_model_dir

from ..engine.checkpointing import usual_mode
from .data import get_task

if TYPE_CHECKING:  # the model class is passed in (MultitaskBert.from_pretrained): no import circle with model.py
    from .model import MultitaskBert

HEADS_KEY = "minibert_heads"
HEAD_PREFIX = "heads."
HEADS_FILE = "heads.safetensors"
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
    """The config.json block that rebuilds the heads: `head_config()`, the label names of each task, and the
    class that reads it back ("module:Class", how minibert's tour finds it without importing tasks/ by name)."""
    return {**model.head_config(), "labels": {t: LABEL_NAMES[t] for t in model.tasks},
            "class": f"{type(model).__module__}:{type(model).__qualname__}"}


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
        _write_weights(model, tmp)
        _write_tokenizer(tokenizer, tmp, model.bert.config.vocab_size)
        _write_sentence_transformers(model, tmp)
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


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().cpu()


def _save(state: Dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file
    save_file(state, str(path), metadata={"format": "pt"})
    usual_mode(path)


def _write_weights(model: MultitaskBert, folder: Path) -> None:
    """model.safetensors holds exactly HF's BertModel (so transformers loads it with no unused key); the heads
    go to their own file."""
    _save(minibert_to_hf({k: _cpu(v) for k, v in model.bert.state_dict().items()}), folder / "model.safetensors")
    heads = {f"{HEAD_PREFIX}{name}.{k}": _cpu(v) for name in model.task_heads
             for k, v in model.heads[name].state_dict().items()}
    if heads:
        _save(heads, folder / HEADS_FILE)


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _write_sentence_transformers(model: MultitaskBert, folder: Path) -> None:
    """sentence-transformers' module list, in its long-standing format (tested with 6.3; a Dense module's
    model.safetensors needs 3.0 or later), so that
    `SentenceTransformer(folder).encode` equals our `encode`: inputs cut to the model's `max_length` tokens (the
    length it was trained at, not the tokenizer's 512), then its pooling, and no normalisation (encode's default).
    mean and cls are sentence-transformers' pooling modes; our 'pooler' (tanh(W h_[CLS] + b), BERT's pooler)
    has no pooling mode there, so it is written as cls pooling followed by a Dense module with tanh that
    holds a copy of the pooler's weights: the same function."""
    C = model.bert.config.hidden_size
    modules = [("", "Transformer"), ("1_Pooling", "Pooling")]
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": model.max_length, "do_lower_case": False})
    (folder / "1_Pooling").mkdir()
    _write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": C, "pooling_mode_cls_token": model.pooling in ("cls", "pooler"),
        "pooling_mode_mean_tokens": model.pooling == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False})
    if model.pooling == "pooler":
        modules.append(("2_Dense", "Dense"))
        (folder / "2_Dense").mkdir()
        _write_json(folder / "2_Dense" / "config.json", {"in_features": C, "out_features": C, "bias": True,
                                                          "activation_function": "torch.nn.modules.activation.Tanh"})
        dense = model.bert.pooler.dense
        _save({"linear.weight": _cpu(dense.weight), "linear.bias": _cpu(dense.bias)},
              folder / "2_Dense" / "model.safetensors")
    _write_json(folder / "modules.json", [dict(idx=i, name=str(i), path=path, type=f"sentence_transformers.models.{kind}")
                                          for i, (path, kind) in enumerate(modules)])


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


# The hub's metadata: each task's public source (the rows are the CS224N course's copies), metric and task type.
HUB_DATASETS = {"sst": "stanfordnlp/sst", "cfimdb": "stanfordnlp/imdb", "para": "quora", "sts": "mteb/stsbenchmark-sts"}
HUB_METRICS = {"accuracy": "accuracy", "pearson": "pearsonr"}
TASK_TITLES = {"sst": "SST-5 sentiment", "cfimdb": "CFIMDB sentiment", "para": "Quora paraphrase",
               "sts": "STS benchmark similarity"}


def hub_base_model(base: str) -> Optional[str]:
    """The hub id a card's `base_model` may name: the embedded all-MiniLM-L6-v2's, or an 'org/name' that is not a
    local path; None for a local folder or a description (the hub rejects what is not a model id)."""
    if base.lower() in (EMBEDDED_NAME.lower(), "sentence-transformers/all-minilm-l6-v2"):
        return "sentence-transformers/all-MiniLM-L6-v2"
    parts = base.split("/")
    if len(parts) == 2 and all(parts) and " " not in base and not Path(base).exists():
        return base
    return None


def card_header(model: MultitaskBert, card: dict) -> str:
    """The YAML block the hub reads at the top of README.md, written as JSON values (valid YAML): library, tags,
    datasets, base model and a model-index with the run's dev scores where it recorded them."""
    q = json.dumps
    base = hub_base_model(str(card.get("base_checkpoint") or EMBEDDED_NAME))
    scores = {t: v for t, v in (card.get("dev_scores") or {}).items() if t in HUB_DATASETS}
    tags = ["minibert", "bert", "sentence-transformers", "feature-extraction", "sentence-similarity"]
    tags += ["text-classification"] if {"sst", "cfimdb", "para"} & set(model.tasks) else []
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity", "language:", "- en",
             "tags:", *[f"- {t}" for t in tags]]
    lines += [f"base_model: {q(base)}"] if base else []
    if model.tasks:
        lines += ["datasets:", *[f"- {q(HUB_DATASETS[t])}" for t in model.tasks]]
        lines += ["metrics:", *[f"- {m}" for m in dict.fromkeys(HUB_METRICS[get_task(t).metric] for t in model.tasks)]]
    if scores:
        lines += ["model-index:", f"- name: {q('minibert ' + ', '.join(model.tasks))}", "  results:"]
        for t, v in scores.items():
            metric = get_task(t).metric
            lines += [f"  - task: {{type: {'sentence-similarity' if t == 'sts' else 'text-classification'}, "
                      f"name: {q(TASK_TITLES[t])}}}",
                      f"    dataset: {{name: {q(TASK_TITLES[t] + ' (CS224N dev file)')}, type: {q(HUB_DATASETS[t])}, "
                      "split: dev}",
                      "    metrics:", f"    - {{type: {HUB_METRICS[metric]}, value: {round(float(v), 4)}, "
                      f"name: {q('dev ' + metric)}}}"]
    return "\n".join(lines + ["---", ""])


def model_card(model: MultitaskBert, card: dict) -> str:
    """README.md: the hub's YAML header, then small and factual, from the model itself and what the run knows."""
    heads, config = model.head_config(), model.bert.config
    base = card.get("base_checkpoint") or EMBEDDED_NAME
    argv = card.get("argv")
    command = card.get("command") or ("python " + " ".join(shlex.quote(str(a)) for a in argv) if argv else "(not recorded)")
    scores, sizes = card.get("dev_scores") or {}, card.get("data_sizes") or {}
    lines = [card_header(model, card), f"# minibert fine-tuned model: {', '.join(model.tasks) or 'no task heads'}", "",
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
              "In Python: `MultitaskBert.from_pretrained(FOLDER)` (tasks/domain/model.py), then `predict_sentiment([...])` "
              "(labels and class probabilities), `predict_paraphrase(a, b)` (labels and probabilities), "
              "`predict_similarity(a, b)` (0-5) or `encode([...])` (a NumPy array); the raw logits through "
              "`predict_sentiment_logits` and `predict_paraphrase_logits`. "
              "`transformers.BertModel.from_pretrained(FOLDER)` loads the encoder alone (the heads are in "
              f"{HEADS_FILE}); `sentence_transformers.SentenceTransformer(FOLDER).encode` gives the same embeddings "
              f"as `encode`: inputs cut to {heads['max_length']} tokens, {_st_pooling(heads['pooling'])}, "
              "not normalised.", "",
              "The datasets in the header name the public sources; the rows used are the CS224N course files.", "",
              "## Intended use and limits", "",
              "- For coursework and study: a small model fine-tuned on the CS224N files (SST-5 movie-review phrases, "
              "CFIMDB reviews, Quora question pairs, STS benchmark), all English.",
              "- The scores above are on those dev sets; expect less on other text. Longer inputs are truncated.",
              "- Not for decisions about people: it has not been checked for bias or robustness.", ""]
    return "\n".join(lines)


def _st_pooling(pooling: str) -> str:
    if pooling == "pooler":
        return ("BERT's pooler (tanh of a dense layer on [CLS]; sentence-transformers has no such pooling mode, so "
                "its files say cls pooling followed by a Dense module with tanh holding the pooler's weights)")
    return f"{pooling} pooling"


# ----------------------------------------------------------------------------- loading

def load_model_folder(cls, name_or_path=None, allow_no_heads: bool = False, **config_overrides) -> MultitaskBert:
    """A `cls` (MultitaskBert: encoder, heads, tokenizer) from a saved folder, or a head-less one from a plain
    encoder checkpoint when `allow_no_heads` (for `encode`); in eval mode."""
    folder = resolve_model_dir(name_or_path)
    config_path = folder / "config.json"
    config = BertConfig.from_json_file(config_path, **config_overrides)
    block = json.loads(config_path.read_text(encoding="utf-8")).get(HEADS_KEY)
    state, source = read_state_dict(folder)
    head_state = _read_heads(folder, state)
    if block is None:
        if head_state:
            raise CheckpointError(f"{source} holds head weights but {config_path} has no '{HEADS_KEY}' block to build them")
        if not allow_no_heads:
            raise NoHeadsError(
                f"{name_or_path or EMBEDDED_NAME} ({folder}) is a plain encoder checkpoint with no trained task heads, so "
                "its predictions would be random. Fine-tune it first (python tasks/multitask.py) and pass the model "
                "folder that run writes; only encoding (tasks/embed.py, model.encode) works on a plain encoder.")
        block = {"tasks": []}
    if not isinstance(block, dict) or not set(_BUILD_ARGS) >= set(block) - {"labels", "class"}:
        raise CheckpointError(f"{config_path}: '{HEADS_KEY}' must be an object with keys among {list(_BUILD_ARGS)} "
                              f"and 'labels', got {block!r}")
    try:
        model = cls(BertModel(config), **{k: v for k, v in block.items() if k not in ("labels", "class")},
                              tokenizer=Tokenizer.from_pretrained(folder))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{config_path}: the '{HEADS_KEY}' block does not build a model: {err}") from None
    ours, unexpected = hf_to_minibert({k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)})
    ours = {"bert." + k: v for k, v in ours.items() if not k.startswith("mlm.")}  # an MLM head is dropped
    _fill_missing_pooler(model, ours, source)
    ours.update({HEAD_PREFIX + k: v for k, v in head_state.items()})
    heads_file = folder / HEADS_FILE
    _check_and_load(model, ours, unexpected, f"{source} + {heads_file.name}" if heads_file.is_file() else source)
    return model.eval()


def _read_heads(folder: Path, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The heads' weights (names without `heads.`): heads.safetensors, or, in a folder written before it existed,
    the `heads.` keys of model.safetensors. Both at once is refused: which would be the trained ones?"""
    old = {k[len(HEAD_PREFIX):]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    path = folder / HEADS_FILE
    if not path.is_file():
        return old
    if old:
        raise CheckpointError(f"{folder} holds head weights in both model.safetensors and {HEADS_FILE}: keep one")
    from safetensors.torch import load_file
    try:
        heads = load_file(str(path))
    except Exception as err:  # safetensors' errors have many types; name the file either way
        raise CheckpointError(f"Could not read weights from {path} (corrupt or not a checkpoint): "
                              f"{type(err).__name__}: {err}") from err
    strange = sorted(k for k in heads if not k.startswith(HEAD_PREFIX))
    if strange:
        raise CheckpointError(f"{path}: every key must start with '{HEAD_PREFIX}'; got {', '.join(strange)}")
    return {k[len(HEAD_PREFIX):]: v for k, v in heads.items()}


def _fill_missing_pooler(model: MultitaskBert, ours: Dict[str, torch.Tensor], source: Path) -> None:
    """Some HF checkpoints have no pooler: it keeps its initial values, with a warning, as in the encoder loader."""
    missing: List[str] = [k for k in model.state_dict() if k.startswith("bert.pooler.") and k not in ours]
    if missing:
        warnings.warn(f"{source} has no {', '.join(missing)}; they keep their initial values")
        ours.update({k: model.state_dict()[k] for k in missing})
