"""minibert: a hand-written BERT that matches HuggingFace's, with its checkpoint loader and tokenizer."""
from .checkpoint import CheckpointError, KEY_TABLE
from .config import BertConfig, tiny_config
from .hub import EMBEDDED_NAME, CheckpointNotFoundError, embedded_model_dir, resolve_model_dir
from .model import BertForMaskedLM, BertModel, BertOutput
from .tokenizer import Tokenizer

__all__ = [
    "BertConfig", "BertModel", "BertForMaskedLM", "BertOutput", "CheckpointError", "CheckpointNotFoundError",
    "EMBEDDED_NAME", "KEY_TABLE", "Tokenizer", "embedded_model_dir", "resolve_model_dir", "tiny_config",
]
