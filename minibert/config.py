"""BertConfig: the hyperparameters of a BERT, with HuggingFace's config.json field names.

Because the field names are HF's, a config.json written by `transformers` loads here unchanged and one we
write loads there. Unknown keys (architectures, model_type, torch_dtype, ...) are ignored on the way in.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

RUNTIME_FIELDS = ("attn_implementation", "gradient_checkpointing")
_ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh", "tanh")


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # exact (erf) GELU, as in the original BERT
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    # minibert's own switches (not in HF's file, harmless there):
    attn_implementation: str = "sdpa"  # "sdpa" (fused, default) or "manual" (written out; returns probabilities)
    gradient_checkpointing: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"BertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"BertConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"BertConfig.layer_norm_eps must be positive, got {self.layer_norm_eps!r}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"BertConfig.hidden_act {self.hidden_act!r} is not one of {_ACTIVATIONS}")
        if self.position_embedding_type != "absolute":
            raise ValueError(
                f"BertConfig.position_embedding_type {self.position_embedding_type!r} is not supported "
                "(only 'absolute', as in the original BERT)"
            )
        if self.attn_implementation not in ("sdpa", "manual"):
            raise ValueError(f"BertConfig.attn_implementation must be 'sdpa' or 'manual', got {self.attn_implementation!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"BertConfig.pad_token_id {self.pad_token_id} is outside the vocabulary")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    # ---- dict / json round trip -----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Dict[str, Any], **overrides) -> "BertConfig":
        """Build from a config.json-style dict; keys that are not fields are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in {**values, **overrides}.items() if k in known}
        if kwargs.get("pad_token_id") is None:
            kwargs.pop("pad_token_id", None)
        return cls(**kwargs)

    @classmethod
    def from_json_file(cls, path: str | Path, **overrides) -> "BertConfig":
        path = Path(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"No config.json at {path}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a JSON object, got {type(values).__name__}")
        model_type = values.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"{path} describes a '{model_type}' model; minibert loads BERT checkpoints only")
        try:
            return cls.from_dict(values, **overrides)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from None

    def to_dict(self) -> Dict[str, Any]:
        """HF config.json fields only: minibert's runtime switches are choices of a run, not of a checkpoint."""
        values = {k: v for k, v in dataclasses.asdict(self).items() if k not in RUNTIME_FIELDS}
        values.update(model_type="bert", architectures=["BertModel"])
        return values

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def replace(self, **changes) -> "BertConfig":
        return dataclasses.replace(self, **changes)


def tiny_config(**overrides: Optional[Any]) -> BertConfig:
    """A small random-weights config for tests and examples (2 layers, width 32)."""
    values = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  max_position_embeddings=64, type_vocab_size=2)
    values.update(overrides)
    return BertConfig(**values)
