"""The loop's features: gradient accumulation, evaluation every N steps, early stopping, step checkpoints
that survive SIGKILL (exact resume), atomic writes, no pickle, --config, devices and precision."""
import json
import logging
import os
import signal
from pathlib import Path

import pytest
import torch

from _forked import HANG_GUARD_S, started
from tasks import multitask
from tasks.engine.checkpointing import atomic_write_text, load_state, save_state
from tasks.engine.devices import Precision, autocast_dtype, pick_device
from tasks.engine import TrainConfig, Trainer


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(4, 1, bias=False)


class _Batches:
    """n batches of a linear least-squares problem, the same every epoch."""

    def __init__(self, n=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.data = [{"x": torch.randn(3, 4, generator=g), "y": torch.randn(3, generator=g)} for _ in range(n)]

    def num_batches(self):
        return len(self.data)

    def batches(self, epoch):
        return iter(self.data)

    def loss(self, model, batch):
        return ((model.w(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()


def _fit(tmp_path, evaluate=lambda m: {"score": 0.0}, **config):
    torch.manual_seed(0)
    model = _Toy()
    cfg = TrainConfig(**{"epochs": 1, "lr": 0.05, "warmup_ratio": 0.0, "schedule": "constant", "weight_decay": 0.0,
                         "out_dir": str(tmp_path), **config})
    trainer = Trainer(model, {"a": _Batches()}, cfg, evaluate, show_progress=False)
    trainer.fit()
    return model, trainer


def test_grad_accum_averages_micro_batches_and_clips_the_mean(tmp_path):
    """Two accumulated steps of one batch = one step on the mean of their gradients, clipped once."""
    accumulated, trainer = _fit(tmp_path / "acc", grad_accum=2, max_grad_norm=0.05)
    assert trainer.steps_per_epoch == 4 and trainer.progress.global_step == 4
    torch.manual_seed(0)
    model, data = _Toy(), _Batches()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)  # only to hold the gradient; the update is AdamW's below
    from optim import AdamW
    adamw = AdamW(model.parameters(), lr=0.05, weight_decay=0.0)
    for i in range(0, 8, 2):
        opt.zero_grad()
        ((data.loss(model, data.data[i]) + data.loss(model, data.data[i + 1])) / 2).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
        adamw.step()
    assert torch.allclose(accumulated.w.weight, model.w.weight, atol=1e-6)
    with pytest.raises(ValueError, match="grad_accum"):
        TrainConfig(grad_accum=0)


def test_eval_every_and_patience_stop_early_and_keep_the_best(tmp_path):
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9, 0.95])  # the best is the 2nd evaluation, then 2 without a gain
    model, trainer = _fit(tmp_path, evaluate=lambda m: {"score": next(scores)}, epochs=2, eval_every=2, patience=2)
    assert [h["step"] for h in trainer.progress.history] == [2, 4, 6, 8]
    assert trainer.progress.global_step == 8 < 16  # stopped after 4 evaluations, mid-way through epoch 1's 8 steps x 2
    best = load_state(tmp_path / "best.safetensors")
    assert best["step"] == 4 and best["scores"]["score"] == 0.7
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4, 6, 8]


def test_a_crafted_pickle_is_refused_not_executed(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle
    path = tmp_path / "last.safetensors"
    path.write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(ValueError, match="not a minibert checkpoint"):
        load_state(path)
    torch.save({"model": Payload()}, tmp_path / "best.pt")
    with pytest.raises(Exception):
        torch.load(tmp_path / "best.pt", weights_only=True)
    assert not marker.exists()


def test_writes_are_atomic_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "last.safetensors"
    save_state(path, {"x": torch.ones(2), "step": 1})

    class Boom(Exception):
        pass

    def half_write(tmp):
        Path(tmp).write_bytes(b"half a file")
        raise Boom

    from tasks.engine import checkpointing
    with pytest.raises(Boom):
        checkpointing.atomic_write(path, half_write)
    assert load_state(path)["step"] == 1 and [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]
    atomic_write_text(tmp_path / "a.txt", "new")
    assert (tmp_path / "a.txt").read_text() == "new"


def _cli_args(tiny_checkpoint, tiny_data, out, *extra):
    return ["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--tasks", "sst", "sts", "--epochs", "2",
            "--batch_size", "4", "--max_examples", "16", "--out_dir", str(out), "--predictions_dir", str(out / "pred"),
            "--no-predict_test", "--save_every", "1", "--ema_decay", "0.5", "--hidden_dropout_prob", "0.1", *extra]


def _killed_run(argv, kill_at):
    """The CLI in a child process (tests/_forked.py) that SIGKILLs itself right after the step checkpoint of
    step `kill_at`: no handler, no atexit, no flush runs, as when a machine's run is killed."""
    save = Trainer.save_checkpoint

    def save_then_die(self):
        save(self)
        if self.progress.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer.save_checkpoint = save_then_die  # (in the child only)
    multitask.main(argv)


def test_sigkill_mid_epoch_then_resume_reaches_the_uninterrupted_result(tiny_checkpoint, tiny_data, tmp_path):
    """The CLI in another process is killed with SIGKILL after a step checkpoint in the middle of epoch 2; --resume
    continues from that exact batch (data order, RNG, schedule, EMA) to the same weights, scores and metrics."""
    straight = multitask.main(_cli_args(tiny_checkpoint, tiny_data, tmp_path / "a"))
    killed = tmp_path / "b"
    proc = started(_killed_run, _cli_args(tiny_checkpoint, tiny_data, killed), 6)  # mid-epoch 2
    proc.join(HANG_GUARD_S)
    if proc.is_alive():  # hung: do not leave it holding the folder
        proc.kill()
    assert proc.exitcode == -signal.SIGKILL, proc.exitcode
    position = load_state(killed / "last.safetensors")["position"]
    assert position["epoch"] == 1 and position["step_in_epoch"] == 2 and position["global_step"] == 6
    resumed = multitask.main(_cli_args(tiny_checkpoint, tiny_data, killed, "--resume"))
    assert resumed == straight
    a, b = load_state(tmp_path / "a" / "last.safetensors"), load_state(killed / "last.safetensors")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["callbacks"][0]:  # the moving average too
        assert torch.equal(a["callbacks"][0][key], b["callbacks"][0][key]), key
    lines = [(tmp_path / d / "metrics.jsonl").read_text().splitlines() for d in ("a", "b")]
    assert len(lines[0]) == 3 and lines[0][-1].startswith('{"final"')  # 2 epochs + the final line, no duplicate
    assert [json.loads(x)["dev"] for x in lines[0]] == [json.loads(x)["dev"] for x in lines[1]]


def test_config_file_gives_defaults_the_command_line_wins_and_a_run_writes_its_own(tiny_checkpoint, tiny_data, tmp_path,
                                                                                   capsys):
    out = tmp_path / "run"
    multitask.main(_cli_args(tiny_checkpoint, tiny_data, out, "--epochs", "1", "--save_every", "0"))
    written = json.loads((out / "run_config.json").read_text())
    assert written["epochs"] == 1 and written["tasks"] == ["sst", "sts"] and "config" not in written
    args = multitask.parse_args(["--config", str(out / "run_config.json"), "--lr", "0.5"])
    assert args.epochs == 1 and args.tasks == ["sst", "sts"] and args.lr == 0.5 and args.phases == ("finetune",)
    again = {k: v for k, v in vars(multitask.parse_args(["--config", str(out / "run_config.json")])).items()}
    assert {k: (list(v) if isinstance(v, tuple) else v) for k, v in again.items() if k != "config"} == written
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epochz": 3}))
    with pytest.raises(SystemExit):
        multitask.parse_args(["--config", str(bad)])
    assert "bad.json: key 'epochz': not a flag" in capsys.readouterr().err


def test_devices_and_precision(monkeypatch, caplog):
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, True) is None and Precision(cpu, True).scaler is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="tasks.engine.devices"):
        assert pick_device(True) == cpu
    assert "neither CUDA nor MPS" in caplog.text  # a logged notice, not a Python warning with its source line
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a T4 or V100
    assert autocast_dtype(cuda, True) == torch.float16 and autocast_dtype(cuda, False) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype(cuda, True) == torch.bfloat16
