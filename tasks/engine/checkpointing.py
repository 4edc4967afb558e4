"""Training state on disk without pickle: one safetensors file per checkpoint, written atomically.

A checkpoint is any nest of dicts, lists and tuples whose leaves are tensors, numbers, strings, None or numpy
arrays (a model's state_dict, an optimizer's, RNG states, the history). `save_state` moves every tensor into
the safetensors table under its path ("optimizer/state/3/exp_avg") and the rest of the tree, as JSON, into
the file's metadata; `load_state` puts them back. Loading therefore runs no code: safetensors reads raw
tensors, and JSON reads plain values (a crafted pickle payload is refused as "not a safetensors file").

Every write goes to a temporary file in the same folder, then `os.replace`: a kill during a save leaves the
previous file whole, never a truncated one, and its temporary file, which `remove_stale_temp_files` removes
when the next run takes the folder (tasks/launch/run_lock.py). `read_header` reads a checkpoint's position and meta
without its tensors.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Union

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

_TENSOR, _ARRAY, _TUPLE = "__tensor__", "__ndarray__", "__tuple__"


def atomic_write(path: Union[str, Path], write: Callable[[str], None]) -> None:
    """Call write(tmp_path) on a temporary file beside `path`, then rename it over `path` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        usual_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# what a killed write leaves: atomic_write's mkstemp(prefix=".<name>.", suffix=".tmp") files (8 random characters),
# and saved_model.py's hidden ".<folder>.tmp-<pid>" / ".<folder>.old-<pid>" siblings
TEMP_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
TEMP_FOLDER = re.compile(r"^\..+\.(tmp|old)-[0-9]+$")


def remove_stale_temp_files(folder: Union[str, Path]) -> List[str]:
    """Remove our own temporary files and folders from `folder` (not below it); returns their names and sizes.
    Only safe while no write can be under way there: with the folder's run lock held (tasks/launch/run_lock.py)."""
    folder, removed = Path(folder), []
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        if path.is_file() and TEMP_FILE.match(path.name):
            removed.append(f"{path.name} ({path.stat().st_size / 1e6:.0f} MB)")
            path.unlink()
        elif path.is_dir() and not path.is_symlink() and TEMP_FOLDER.match(path.name):
            removed.append(f"{path.name}/")
            shutil.rmtree(path, ignore_errors=True)
    return removed


def usual_mode(path) -> None:
    """The mode open() would give a new file (mkstemp and safetensors make 0600, unreadable to others)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_jsonl(path: Union[str, Path], records: Iterable[dict]) -> None:
    """The whole file at once (atomically): a resumed run rewrites it from its history, never appends twice."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def read_jsonl(path: Union[str, Path]) -> list:
    path = Path(path)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if path.is_file() else []


def _split(obj: Any, path: str, tensors: Dict[str, torch.Tensor]) -> Any:
    """The JSON tree of obj, its tensors moved into `tensors` under their paths."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {_TENSOR: path}
    if isinstance(obj, np.ndarray):
        return {_ARRAY: obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"checkpoint keys must be str or int, got {list(obj)[:5]} at {path or '/'}")
        # int keys (an optimizer's state) are kept apart so that they come back as ints
        return {"__dict__": [[k, _split(v, f"{path}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {_TUPLE: [_split(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path or '/'} in a checkpoint")


def _join(tree: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, list):
        return [_join(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if _TENSOR in tree:
        return tensors[tree[_TENSOR]]
    if _ARRAY in tree:
        return np.asarray(tree[_ARRAY], dtype=tree["dtype"])
    if _TUPLE in tree:
        return tuple(_join(v, tensors) for v in tree[_TUPLE])
    return {k: _join(v, tensors) for k, v in tree["__dict__"]}


def save_state(path: Union[str, Path], state: Any) -> None:
    """Write `state` (see the module docstring) to one safetensors file, atomically."""
    tensors: Dict[str, torch.Tensor] = {}
    tree = json.dumps(_split(state, "", tensors))
    # safetensors refuses tensors that share memory (tied weights): store each under its own copy
    seen: Dict[tuple, str] = {}
    for key, t in tensors.items():
        if t.numel() and (t.untyped_storage().data_ptr(), t.storage_offset()) in seen:
            tensors[key] = t.clone()
        elif t.numel():
            seen[(t.untyped_storage().data_ptr(), t.storage_offset())] = key
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"minibert_state": tree}))


def load_state(path: Union[str, Path]) -> Any:
    """The state `save_state` wrote. No pickle: a file that is not safetensors is refused with its path."""
    return _read_state(path, with_tensors=True)


def read_header(path: Union[str, Path]) -> Any:
    """The state `save_state` wrote with every tensor left out (None): its position, config and meta, read from
    the file's header alone, not its hundreds of MB of weights."""
    return _read_state(path, with_tensors=False)


def _read_state(path: Union[str, Path], with_tensors: bool) -> Any:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()} if with_tensors else _NoTensors()
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a minibert checkpoint (safetensors): {err}") from None
    if "minibert_state" not in meta:
        raise ValueError(f"{path} is a safetensors file without minibert's training state (no 'minibert_state')")
    return _join(json.loads(meta["minibert_state"]), tensors)


class _NoTensors(dict):
    def __missing__(self, key):
        return None


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state["numpy"]))
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
