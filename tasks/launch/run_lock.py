"""One run per --out_dir, and a resumed run that is the run it resumes.

Two runs writing one folder interleave their checkpoints, metrics and model, and both report success with
files that are the last writer's. `claim_out_dir` holds <out_dir>/run.lock for the whole run: an advisory
lock (fcntl.flock) that the kernel drops when the process ends, however it ends, and in the file who holds
it (pid, host, command, start time) for the refusal. A lock file left by a killed run is taken over, with a
note saying whose it was. Holding the lock, the run removes what a killed write left (the temporary files of
tasks/engine/checkpointing.py's atomic writes: no other writer can be mid-write).

With --resume it then compares the flags the checkpoint was written with to the new ones: a change to one
that alters the training (--lr, --epochs, --seed, a technique's flag, ...) is refused, each named old → new,
unless --allow_changed_flags, and then recorded in <out_dir>/resumes.jsonl (every resume is, with the step it
resumed at; run_config.json's "resumes" and the final record of metrics.jsonl repeat them, so neither claims a
changed value for the whole run). A checkpoint written before it kept its flags is compared with run_config.json.
Where files go, --save_every and the device (--use_gpu, --compile, ...) may change: the last with a note, as
numbers then differ in the last bits. --eval_every and --patience may not: they choose the kept epoch.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from ..engine.checkpointing import read_header, read_jsonl, remove_stale_temp_files, write_jsonl
from .cli import fail

try:
    import fcntl
except ImportError:  # Windows: no flock; a lock file whose pid runs on this host is taken as held
    fcntl = None

log = logging.getLogger(__name__)
LOCK, RESUMES = "run.lock", "resumes.jsonl"


# Flags a resumed run may change. The rest change what is trained (its data, model, schedule, seed, selection):
# resuming with one of them changed gives a run that is neither the old one nor the new one.
FREE_FLAGS = {"out_dir", "predictions_dir", "predict_test", "save_every", "resume", "allow_changed_flags", "config"}
# where the computation runs, or how: the same training, its numbers no longer bit-identical (allowed, with a note)
HOW_FLAGS = {"use_gpu", "compile", "gradient_checkpointing", "attn_implementation"}
# where the data files are (a run folder moved to another machine): the same run if the files are the same
PATH_FLAGS = {"data_dir"}


def flag_kind(name: str) -> str:
    """"free", "how", "path" or "training" (see above); --<task>_{dev,test}_out and the test file are outputs."""
    if name in FREE_FLAGS or name.endswith(("_dev_out", "_test_out", "_test")):
        return "free"
    if name in HOW_FLAGS:
        return "how"
    if name in PATH_FLAGS or name.endswith(("_train", "_dev")):
        return "path"
    return "training"


def flag_changes(old: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Dict[str, Tuple[Any, Any]]]:
    """{kind: {flag: (old, new)}} for the flags whose values differ (flag_kind's kinds, "free" left out), compared
    as JSON. A flag the checkpoint does not know (newer than it) is kind "unknown", with old None."""
    new = json.loads(json.dumps(new, default=str))
    changes: Dict[str, Dict[str, Tuple[Any, Any]]] = {}
    for name, value in new.items():
        kind = flag_kind(name) if name in old or flag_kind(name) == "free" else "unknown"
        if kind != "free" and old.get(name) != value:
            changes.setdefault(kind, {})[name] = (old.get(name), value)
    return changes


def _holder(text: str) -> dict:
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {"command": f"(unreadable lock file: {text[:80]!r})"}


def _describe(h: dict) -> str:
    return f"pid {h.get('pid', '?')} on {h.get('host', '?')}, started {h.get('since', '?')}: {h.get('command', '?')}"


def _pid_runs(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def _open_locked(path: Path):
    """(fd, what the file held before) with the flock taken, or (None, the holder) when a live process has it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        before = _holder(os.read(fd, 1 << 16).decode("utf-8", "replace"))
        if fcntl is None:
            if before.get("host") == socket.gethostname() and _pid_runs(before.get("pid")):
                os.close(fd)
                return None, before
            return fd, before
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None, before
        try:  # the holder may have unlinked the file between our open and our lock: then lock the new one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.lseek(fd, 0, os.SEEK_SET)
                return fd, _holder(os.read(fd, 1 << 16).decode("utf-8", "replace"))
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def run_lock(out_dir, prog: str) -> Iterator[Path]:
    """Hold <out_dir>/run.lock while the block runs; a refusal (`prog: error: ...`, exit 2) if a live run has it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK
    fd, before = _open_locked(path)
    if fd is None:
        fail(prog, f"{out_dir} is in use by another run ({_describe(before)}); wait for it to end, stop it, or "
                   f"give this run another --out_dir (the lock: {path})")
    if before and before.get("host") not in (None, socket.gethostname()):
        os.close(fd)  # flock may not reach across machines on a network file system: do not guess
        fail(prog, f"{path} is held by a run on another machine ({_describe(before)}); if that run has ended, "
                   f"delete {path}")
    if before:
        log.warning(f"{path}: taking over the lock of a run that ended without releasing it ({_describe(before)})")
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join([sys.executable, *sys.argv]),
          "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(me) + "\n").encode())
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # before closing: a run waiting on this inode sees it gone and locks a fresh file
        os.close(fd)


def recorded_flags(path: Path) -> Optional[dict]:
    """The flags in a run_config.json (its "resumes" record left out), or None without a readable one."""
    try:
        flags = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(flags, dict):
        return None
    flags.pop("resumes", None)
    return flags


def check_resume(args, flags: dict, prog: str) -> Optional[dict]:
    """With --resume and a checkpoint: refuse changed training flags (unless --allow_changed_flags), note the
    others, and append the resume to resumes.jsonl. Without: remove an older run's resumes.jsonl."""
    out_dir = Path(args.out_dir)
    checkpoint, resumes = out_dir / "last.safetensors", out_dir / RESUMES
    if not (args.resume and checkpoint.is_file()):
        resumes.unlink(missing_ok=True)  # this run starts afresh: an earlier run's resumes are not its own
        return None
    try:
        state = read_header(checkpoint)
    except ValueError as err:
        fail(prog, f"--resume: {err}")
    old = (state.get("meta") or {}).get("flags")
    if old is None:  # a checkpoint from before they were kept: the run's run_config.json, if it has one
        old = recorded_flags(out_dir / "run_config.json")
        log.warning(f"--resume: {checkpoint} does not record its flags (written before they were kept): "
                    + (f"compared with {out_dir / 'run_config.json'}'s" if old is not None else
                       "they cannot be compared with this command's"))
    changes = flag_changes(old, flags) if old is not None else {}
    def shown(kind: str) -> str:
        return ", ".join(f"--{k} {json.dumps(b)}" if kind == "unknown" else f"--{k} {json.dumps(a)} → {json.dumps(b)}"
                         for k, (a, b) in changes.get(kind, {}).items())
    if changes.get("training") and not args.allow_changed_flags:
        fail(prog, f"--resume: {checkpoint} was trained with other values of flags that change the training: "
                   f"{shown('training')}. Resume with the checkpoint's values (they are in "
                   f"{out_dir / 'run_config.json'}: --config it), start afresh in another --out_dir, or pass "
                   "--allow_changed_flags to continue with the new values (recorded, with the step, in "
                   "run_config.json's \"resumes\"; the result is then neither run's)")
    if changes.get("training"):
        log.warning(f"--resume with changed training flags ({shown('training')}): recorded in {resumes} and "
                    f"{out_dir / 'run_config.json'}")
    if changes.get("how"):
        log.warning(f"--resume on another device or kernel ({shown('how')}): the same training, its numbers no "
                    "longer bit-identical to an uninterrupted run's")
    if changes.get("path"):
        log.warning(f"--resume with data files in another place ({shown('path')}): they must be the same files")
    if changes.get("unknown"):
        log.warning(f"--resume: the checkpoint does not record {shown('unknown')} (flags newer than it): make sure "
                    "they are as that run had them")
    position = state.get("position") or {}
    record = {"resumed": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "at_step": position.get("global_step"), "at_epoch": (position.get("epoch") or 0) + 1,
              "argv": sys.argv[1:], "changed": {k: list(v) for kind in ("training", "how", "path", "unknown")
                                                for k, v in changes.get(kind, {}).items()}}
    write_jsonl(resumes, read_jsonl(resumes) + [record])
    return record


@contextlib.contextmanager
def claim_out_dir(args, flags: dict, prog: str, main_process: bool = True) -> Iterator[None]:
    """The run's hold on args.out_dir: the lock, the killed writes' leftovers removed, --resume's flags checked.
    Only the main process (rank 0) claims: the other ranks of a torchrun write nothing there."""
    if not main_process:
        yield
        return
    with run_lock(args.out_dir, prog):
        out_dir = Path(args.out_dir)
        for folder in [out_dir, *sorted(out_dir.glob("phase-*"))]:
            removed = remove_stale_temp_files(folder)
            if removed:
                log.warning(f"{folder}: removed what interrupted writes left: {', '.join(removed)}")
        check_resume(args, flags, prog)
        yield
