"""--resume is the run it resumes: a changed flag that alters the training is refused by name (old → new) unless
--allow_changed_flags, and then recorded; outputs and the device may change (tasks/launch/run_lock.py)."""
import json

import pytest
import torch

from tasks import multitask
from tasks.engine.checkpointing import load_state, read_header, save_state
from tasks.launch.run_lock import flag_changes


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
