"""One run per --out_dir: a live run's lock refuses a second run by name, a killed run's lock is taken over, and
what a killed atomic write left is removed (tasks/launch/run_lock.py)."""
import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import multitask
from tasks.engine.checkpointing import remove_stale_temp_files
from tasks.launch.cli import UserError
from tasks.launch.run_lock import LOCK, claim_out_dir, run_lock

REPO = Path(__file__).resolve().parent.parent
HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from tasks.launch.run_lock import run_lock
with run_lock({out!r}, "holder"):
    print("held", flush=True)
    sys.stdin.readline()  # until the test says so (or kills us)
"""


def _holder(out):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER.format(repo=str(REPO), out=str(out)), "--marker"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_a_busy_out_dir_is_refused_naming_the_holder(tmp_path, tiny_checkpoint, tiny_data, capsys):
    """Before: both runs went on and exited 0, the folder the last writer's."""
    out = tmp_path / "run"
    holder = _holder(out)
    try:
        with pytest.raises(UserError) as refused:
            with run_lock(out, "multitask.py"):
                pass
        line = str(refused.value)
        assert f"{out} is in use by another run (pid {holder.pid} on {socket.gethostname()}, started " in line
        assert "--marker" in line and "another --out_dir" in line and refused.value.code == 2
        with pytest.raises(SystemExit) as stop:  # the CLI: refused before it reads anything or writes a file
            multitask.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--tasks", "sst",
                            "--epochs", "1", "--max_examples", "4", "--out_dir", str(out),
                            "--predictions_dir", str(tmp_path / "pred")])
        assert stop.value.code == 2 and f"pid {holder.pid}" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [LOCK] and not (tmp_path / "pred").exists()
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0 and not (out / LOCK).exists()  # released: the file goes with the lock
    with run_lock(out, "multitask.py") as path:  # free again
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not (out / LOCK).exists()


def test_a_killed_runs_lock_is_taken_over_with_a_note(tmp_path, caplog):
    out = tmp_path / "run"
    holder = _holder(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    left = json.loads((out / LOCK).read_text())
    assert left["pid"] == holder.pid  # a killed run cannot remove its lock file
    with caplog.at_level(logging.WARNING, logger="tasks.launch.run_lock"), run_lock(out, "multitask.py") as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"taking over the lock of a run that ended without releasing it (pid {holder.pid}" in caplog.text
    assert not (out / LOCK).exists()


def test_a_lock_from_another_machine_is_not_guessed_at(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "python x", "since": "then"}))
    with pytest.raises(UserError, match="held by a run on another machine .*pid 1 on elsewhere.*delete"):
        with run_lock(out, "multitask.py"):
            pass


def test_stale_temporary_files_are_removed_when_the_folder_is_claimed(tmp_path, caplog):
    """Before: a kill during a checkpoint write left a ~271 MB .last.safetensors.<random>.tmp that nothing removed."""
    out = tmp_path / "run"
    (out / "phase-dae").mkdir(parents=True)
    ours = [out / ".last.safetensors.k2j_9xq1.tmp", out / "phase-dae" / ".best.safetensors.abcdefgh.tmp"]
    for path in ours:
        path.write_bytes(b"\0" * 1000)
    (out / ".model.tmp-4242").mkdir()
    (out / ".model.tmp-4242" / "model.safetensors").write_bytes(b"x")
    kept = [out / "notes.tmp", out / ".notes.tmp", out / ".x.short.tmp", out / "last.safetensors", out / "model"]
    for path in kept[:-1]:
        path.write_text("mine")
    kept[-1].mkdir()
    args = argparse.Namespace(out_dir=str(out), resume=False, allow_changed_flags=False)
    with caplog.at_level(logging.WARNING, logger="tasks.launch.run_lock"), claim_out_dir(args, {}, "multitask.py"):
        pass
    assert not any(p.exists() for p in ours) and not (out / ".model.tmp-4242").exists()
    assert all(p.exists() for p in kept)
    assert ".last.safetensors.k2j_9xq1.tmp (0 MB)" in caplog.text and ".model.tmp-4242/" in caplog.text
    assert remove_stale_temp_files(tmp_path / "missing") == []
