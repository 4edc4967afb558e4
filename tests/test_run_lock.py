"""tasks/launch/run_lock.py. One run per --out_dir: a live run's lock refuses a second run by name, a killed run's
lock is taken over, and what a killed atomic write left is removed. --resume is the run it resumes: a changed
flag that alters the training is refused by name (old → new) unless --allow_changed_flags, and then recorded;
outputs and the device may change."""
import argparse
import json
import logging
import os
import signal
import socket
import sys

import pytest
import torch

from _forked import HANG_GUARD_S, context, started
from tasks import multitask
from tasks.engine.checkpointing import load_state, read_header, remove_stale_temp_files, save_state
from tasks.launch.cli import UserError
from tasks.launch.run_lock import LOCK, claim_out_dir, flag_changes, run_lock


def _hold(out, held, release):
    """A run in another process (tests/_forked.py) holding `out`'s lock until released or killed."""
    sys.argv = ["holder", "--marker"]  # what the lock file records as the holder's command
    with run_lock(out, "holder"):
        held.set()
        release.wait(HANG_GUARD_S)


def _holder(out):
    ctx = context()
    held, release = ctx.Event(), ctx.Event()
    proc = started(_hold, out, held, release, ctx=ctx)
    assert held.wait(HANG_GUARD_S), "the holder did not take the lock"
    proc.release = release
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
        holder.release.set()
        holder.join(HANG_GUARD_S)
    assert holder.exitcode == 0 and not (out / LOCK).exists()  # released: the file goes with the lock
    with run_lock(out, "multitask.py") as path:  # free again
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not (out / LOCK).exists()


def test_a_killed_runs_lock_is_taken_over_with_a_note(tmp_path, caplog):
    out = tmp_path / "run"
    holder = _holder(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(HANG_GUARD_S)  # (reaped: a zombie's pid would still look alive)
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


def test_flag_kinds():
    old = {"lr": 1e-4, "seed": 1, "tasks": ["sst", "sts"], "out_dir": "a", "save_every": 0, "use_gpu": False,
           "data_dir": "x", "sst_test_out": "p", "sst_test": "t", "sst_train": "s"}
    new = {**old, "lr": 5e-5, "tasks": ("sst", "sts"), "out_dir": "b", "save_every": 300, "use_gpu": True,
           "data_dir": "y", "sst_test_out": "q", "sst_test": "u", "new_flag": 3}
    assert flag_changes(old, new) == {"training": {"lr": (1e-4, 5e-5)}, "how": {"use_gpu": (False, True)},
                                      "path": {"data_dir": ("x", "y")}, "unknown": {"new_flag": (None, 3)}}
    assert flag_changes(old, dict(old)) == {}
    assert flag_changes(old, {**old, "allow_changed_flags": True}) == {}  # a free flag newer than the record


def test_a_checkpoint_without_its_flags_is_compared_with_run_config_json(tiny_checkpoint, tiny_data, tmp_path,
                                                                         capsys):
    out = tmp_path / "run"
    base = ["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--tasks", "sst", "--epochs", "1",
            "--batch_size", "4", "--max_examples", "8", "--no-predict_test", "--out_dir", str(out),
            "--predictions_dir", str(out / "pred")]
    multitask.main(base)
    state = load_state(out / "last.safetensors")
    del state["meta"]["flags"]  # as checkpoints were written before the flags were kept
    save_state(out / "last.safetensors", state)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        multitask.main(base + ["--lr", "5e-5", "--resume"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"compared with {out / 'run_config.json'}'s" in err
    assert "--lr 0.0001 → 5e-05" in err
    (out / "run_config.json").unlink()  # nothing to compare with: said so, and resumed
    multitask.main(base + ["--resume"])
    assert "they cannot be compared with this command's" in capsys.readouterr().err


def test_read_header_skips_the_weights(tmp_path):
    save_state(tmp_path / "last.safetensors", {"model": {"w": torch.ones(3)}, "position": {"global_step": 7},
                                               "meta": {"flags": {"lr": 0.1}}})
    state = read_header(tmp_path / "last.safetensors")
    assert state == {"model": {"w": None}, "position": {"global_step": 7}, "meta": {"flags": {"lr": 0.1}}}


def test_resume_refuses_changed_training_flags_unless_allowed_and_then_records_them(tiny_checkpoint, tiny_data,
                                                                                      tmp_path, capsys):
    """Before: `--resume --lr 5e-5` on a run checkpointed at 1e-4 went on silently, and run_config.json claimed
    5e-5 for the whole run."""
    out = tmp_path / "run"
    base = ["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--tasks", "sst", "--epochs", "1",
            "--batch_size", "4", "--max_examples", "8", "--no-predict_test", "--out_dir", str(out),
            "--predictions_dir", str(out / "pred")]
    multitask.main(base)
    files = {name: (out / name).read_bytes() for name in ("metrics.jsonl", "run_config.json", "last.safetensors")}
    capsys.readouterr()

    for extra, named in ((["--lr", "5e-5"], ["--lr 0.0001 → 5e-05"]),
                         (["--lr", "5e-5", "--seed", "3"], ["--lr 0.0001 → 5e-05", "--seed 11711 → 3"])):
        with pytest.raises(SystemExit) as stop:
            multitask.main(base + extra + ["--resume"])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and "Traceback" not in err
        assert "was trained with other values of flags that change the training: " + ", ".join(named) + "." in err
        assert "--allow_changed_flags" in err and "run_config.json" in err
        assert {name: (out / name).read_bytes() for name in files} == files  # nothing touched
        assert not (out / "resumes.jsonl").exists()

    # where files go and the device may change: accepted, the device with a note, the resume recorded
    multitask.main(base + ["--predictions_dir", str(tmp_path / "elsewhere"), "--use_gpu", "--resume"])
    assert "on another device or kernel (--use_gpu false → true)" in capsys.readouterr().err
    resumes = [json.loads(x) for x in (out / "resumes.jsonl").read_text().splitlines()]
    assert len(resumes) == 1 and resumes[0]["changed"] == {"use_gpu": [False, True]} and resumes[0]["at_step"] == 2

    multitask.main(base + ["--lr", "5e-5", "--resume", "--allow_changed_flags"])
    assert "--resume with changed training flags (--lr 0.0001 → 5e-05): recorded in" in capsys.readouterr().err
    resumes = [json.loads(x) for x in (out / "resumes.jsonl").read_text().splitlines()]
    assert [r["changed"] for r in resumes] == [{"use_gpu": [False, True]}, {"lr": [0.0001, 5e-05]}]
    final = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["final"] and final["resumes"] == resumes  # the run's summary says it was not one run
    config = json.loads((out / "run_config.json").read_text())
    assert config["lr"] == 5e-05 and config["resumes"] == resumes  # 5e-5 from step 2 on, not for the whole run
    again = multitask.parse_args(["--config", str(out / "run_config.json")])  # "resumes" is a record, not a flag
    assert again.lr == 5e-05 and not hasattr(again, "resumes")

    multitask.main(base)  # a fresh run in the folder: the earlier run's resumes are not its own
    assert not (out / "resumes.jsonl").exists()
    assert "resumes" not in json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])


def test_the_gan_cli_checks_its_resume_too(tiny_checkpoint, tiny_data, tmp_path, capsys):
    from gan import train
    base = ["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--epochs", "1", "--batch_size", "8",
            "--noise_dim", "8", "--max_examples", "16", "--no-predict_test", "--out_dir", str(tmp_path / "run"),
            "--predictions_dir", str(tmp_path / "pred")]
    train.main(base)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        train.main(base + ["--resume", "--noise_dim", "4"])
    assert stop.value.code == 2 and "--noise_dim 8 → 4" in capsys.readouterr().err
    train.main(base + ["--resume"])  # the same flags: resumed
    assert (tmp_path / "run" / "sst-acganbert" / "resumes.jsonl").is_file()
