"""Reading and writing HuggingFace BERT checkpoints.

One explicit table, `KEY_TABLE`, maps HuggingFace's parameter names onto ours; it is used in both
directions (loading and `save_pretrained`). Around it, the loader deals with the variations found in real
checkpoints:
- a `bert.` prefix (BertForPreTraining, BertForMaskedLM, BertForSequenceClassification);
- old TensorFlow-converted names `gamma` / `beta` for LayerNorm weight / bias;
- `position_ids` buffers, which are not parameters;
- the MLM decoder weight, which is tied to the word embeddings, and a decoder bias stored in either place;
- heads we do not build (next-sentence prediction, a sequence classifier), which are ignored.
Anything else missing, unexpected or mis-shaped raises one `CheckpointError` listing every problem.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from .config import BertConfig
from .hub import CheckpointNotFoundError, resolve_model_dir

# (HuggingFace name, minibert name). {i} is a layer index, {p} is "weight" or "bias".
KEY_TABLE: List[Tuple[str, str]] = [
    ("embeddings.word_embeddings.weight", "embeddings.word.weight"),
    ("embeddings.position_embeddings.weight", "embeddings.position.weight"),
    ("embeddings.token_type_embeddings.weight", "embeddings.token_type.weight"),
    ("embeddings.LayerNorm.{p}", "embeddings.norm.{p}"),
    ("encoder.layer.{i}.attention.self.query.{p}", "layers.{i}.attn.query.{p}"),
    ("encoder.layer.{i}.attention.self.key.{p}", "layers.{i}.attn.key.{p}"),
    ("encoder.layer.{i}.attention.self.value.{p}", "layers.{i}.attn.value.{p}"),
    ("encoder.layer.{i}.attention.output.dense.{p}", "layers.{i}.attn.out.{p}"),
    ("encoder.layer.{i}.attention.output.LayerNorm.{p}", "layers.{i}.attn_norm.{p}"),
    ("encoder.layer.{i}.intermediate.dense.{p}", "layers.{i}.ffn.up.{p}"),
    ("encoder.layer.{i}.output.dense.{p}", "layers.{i}.ffn.down.{p}"),
    ("encoder.layer.{i}.output.LayerNorm.{p}", "layers.{i}.ffn_norm.{p}"),
    ("pooler.dense.{p}", "pooler.dense.{p}"),
    # masked-language-model head (BertForMaskedLM / BertForPreTraining)
    ("cls.predictions.transform.dense.{p}", "mlm.transform.{p}"),
    ("cls.predictions.transform.LayerNorm.{p}", "mlm.norm.{p}"),
    ("cls.predictions.bias", "mlm.bias"),
]

# HF keys that are fine to find and drop: buffers, the tied decoder, and heads minibert does not build.
IGNORED_HF_KEYS = [
    r"(.*\.)?position_ids",
    r"cls\.predictions\.decoder\.weight",  # tied to embeddings.word.weight
    r"cls\.seq_relationship\..*",  # next-sentence-prediction head
    r"classifier\..*",  # BertForSequenceClassification's head
    r"qa_outputs\..*",
]
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message lists every missing, unexpected or mis-shaped key."""


def _pattern(template: str) -> "re.Pattern[str]":
    regex = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(regex + "$")


_HF_TO_OURS = [(_pattern(hf), ours) for hf, ours in KEY_TABLE]
_OURS_TO_HF = [(_pattern(ours), hf) for hf, ours in KEY_TABLE]
_IGNORED = [re.compile(p + "$") for p in IGNORED_HF_KEYS]


def _translate(key: str, table) -> Optional[str]:
    for pattern, template in table:
        match = pattern.match(key)
        if match:
            return template.format(**match.groupdict())
    return None


def normalise_hf_key(key: str) -> str:
    """Strip the `bert.` prefix and rename old LayerNorm gamma/beta; the decoder bias has two historic homes."""
    if key.startswith("bert."):
        key = key[len("bert."):]
    key = re.sub(r"\.gamma$", ".weight", key)
    key = re.sub(r"\.beta$", ".bias", key)
    if key == "cls.predictions.decoder.bias":
        key = "cls.predictions.bias"
    return key


# exercise: key_table — HF's keys to ours via KEY_TABLE; list the unknown. hint: normalise_hf_key, _translate, _IGNORED
def hf_to_minibert(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a HuggingFace state dict; returns (our state dict, HF keys that map to nothing and are not ignorable)."""
    ours, unexpected = {}, []
    for raw_key, tensor in state.items():
        key = normalise_hf_key(raw_key)
        name = _translate(key, _HF_TO_OURS)
        if name is not None:
            ours[name] = tensor
        elif not any(p.match(key) for p in _IGNORED):
            unexpected.append(raw_key)
    return ours, unexpected


def minibert_to_hf(state: Dict[str, torch.Tensor], prefix: str = "") -> Dict[str, torch.Tensor]:
    """Our names -> HuggingFace's (with `prefix`, e.g. 'bert.' for encoder keys of a model with a head)."""
    out = {}
    for key, tensor in state.items():
        inner = key[len("bert."):] if key.startswith("bert.") else key
        hf = _translate(inner, _OURS_TO_HF)
        if hf is None:
            raise KeyError(f"{key} has no HuggingFace name in KEY_TABLE")
        out[hf if hf.startswith("cls.") else prefix + hf] = tensor
    return out


def read_state_dict(folder: Path) -> Tuple[Dict[str, torch.Tensor], Path]:
    """Read model.safetensors (preferred) or pytorch_model.bin from a folder, never unpickling arbitrary code."""
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file
                return load_file(str(path)), path
            return torch.load(path, map_location="cpu", weights_only=True), path
        except Exception as err:  # safetensors/pickle errors have many types; name the file either way
            raise CheckpointError(f"Could not read weights from {path} (corrupt or not a checkpoint): "
                                  f"{type(err).__name__}: {err}") from err
    if (folder / "model.safetensors.index.json").is_file() or (folder / "pytorch_model.bin.index.json").is_file():
        raise CheckpointError(f"{folder} holds a sharded checkpoint, which minibert does not read; BERT-sized "
                              "models fit in one file (save it with save_pretrained(max_shard_size='2GB')).")
    raise CheckpointNotFoundError(f"{folder} has no weights file (looked for {', '.join(WEIGHT_FILES)})")


def _check_and_load(model: torch.nn.Module, ours: Dict[str, torch.Tensor], unexpected: List[str], source: Path):
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in ours)
    # HF checkpoints of headed models may lack the pooler, and some omit the MLM decoder bias: those keep
    # their initial values (as in HF, with a warning). Anything else missing is an error.
    optional = [k for k in missing if k.startswith("pooler.") or k == "mlm.bias"]
    if optional:
        warnings.warn(f"{source} has no {', '.join(optional)}; they keep their initial values")
    missing = [k for k in missing if k not in optional]
    unexpected = sorted(unexpected + [k for k in ours if k not in expected])
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
              for k, v in ours.items() if k in expected and v.shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    if shapes:
        problems.append(f"mis-shaped keys ({len(shapes)}): {'; '.join(shapes)}")
    if problems:
        raise CheckpointError(f"Checkpoint {source} does not fit {type(model).__name__}:\n  " + "\n  ".join(problems))
    model.load_state_dict(ours, strict=False)


def load_pretrained(cls, name_or_path=None, **config_overrides):
    """Build `cls` from a checkpoint folder, the embedded default or a hub id (see minibert.hub)."""
    folder = resolve_model_dir(name_or_path)
    config = BertConfig.from_json_file(folder / "config.json", **config_overrides)
    state, source = read_state_dict(folder)
    ours, unexpected = hf_to_minibert(state)
    model = cls(config)
    if any(k.startswith("mlm.") for k in model.state_dict()):  # a model with a head keeps the encoder under bert.
        ours = {(k if k.startswith("mlm.") else "bert." + k): v for k, v in ours.items()}
    else:  # an encoder alone: a checkpoint's MLM head is a known head that we drop
        ours = {k: v for k, v in ours.items() if not k.startswith("mlm.")}
    _check_and_load(model, ours, unexpected, source)
    model.eval()  # as HuggingFace does: call .train() before fine-tuning
    return model


def save_pretrained(model: torch.nn.Module, folder) -> None:
    """Write config.json and model.safetensors in HuggingFace's layout (BertModel, or BertForMaskedLM keys)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    has_head = any(k.startswith("mlm.") for k in state)
    hf = minibert_to_hf(state, prefix="bert." if has_head else "")
    if has_head:  # HF expects the tied decoder weight to be present in a BertForMaskedLM checkpoint
        hf["cls.predictions.decoder.weight"] = hf["bert.embeddings.word_embeddings.weight"].clone()
    config = model.config.to_dict()
    if has_head:
        config["architectures"] = ["BertForMaskedLM"]
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_file(hf, str(folder / "model.safetensors"), metadata={"format": "pt"})
