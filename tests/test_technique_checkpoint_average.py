"""Checkpoint averaging (tasks/techniques/checkpoint_average.py): the mean of the weights at the last K
evaluations is what is evaluated and kept, training goes on from the model's own weights, and --resume
continues it exactly."""
import pytest
import torch

from tasks.engine.checkpointing import load_state
from tasks.techniques.checkpoint_average import (CheckpointAverageConfig, CheckpointAverageTechnique,
                                                 average_state)
from tasks.techniques.ema import EMAConfig, EMATechnique
from tasks.engine import TrainConfig, Trainer


def test_average_state_is_the_hand_computed_mean_and_keeps_integer_buffers_from_the_last():
    a = {"w": torch.tensor([1.0, 2.0]), "h": torch.tensor([1.0], dtype=torch.bfloat16), "ids": torch.tensor([0, 1])}
    b = {"w": torch.tensor([3.0, 6.0]), "h": torch.tensor([2.0], dtype=torch.bfloat16), "ids": torch.tensor([5, 7])}
    mean = average_state([a, b])
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0]))
    assert mean["h"].dtype == torch.bfloat16 and mean["h"].item() == 1.5
    assert torch.equal(mean["ids"], torch.tensor([5, 7]))


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bert = torch.nn.Linear(3, 1, bias=False)


class _Proc:
    """Two batches an epoch whose gradient on the weight is a fixed direction: the weights move every step."""

    def num_batches(self):
        return 2

    def batches(self, epoch):
        return iter([{"x": torch.tensor([1.0, -2.0, 0.5])}] * 2)

    def loss(self, model, batch):
        return (model.bert.weight * batch["x"]).sum()


def _fit(tmp_path, k, epochs=4, scores=(0.1, 0.5, 0.3, 0.2), resume=False, interrupt_at=None, extra=(), done=0):
    """done: evaluations an interrupted run already made (the scores go on from there)."""
    torch.manual_seed(0)
    model = _Toy()
    raw, evaluated = [], []

    def evaluate(m):
        raw.append(model.bert.weight.detach().clone())
        evaluated.append(m.bert.weight.detach().clone())
        if interrupt_at is not None and len(evaluated) == interrupt_at:
            raise KeyboardInterrupt
        return {"score": scores[done + len(evaluated) - 1]}

    cfg = TrainConfig(epochs=epochs, lr=0.1, warmup_ratio=0.0, schedule="constant", weight_decay=0.0,
                      max_grad_norm=0.0, out_dir=str(tmp_path), resume=resume)
    callbacks = [CheckpointAverageTechnique().callback(CheckpointAverageConfig(k), model), *extra]
    trainer = Trainer(model, {"a": _Proc()}, cfg, evaluate, [c for c in callbacks if c], show_progress=False)
    try:
        trainer.fit()
    except KeyboardInterrupt:
        pass
    return model, raw, evaluated


def test_the_mean_of_the_last_k_evaluations_is_evaluated_and_kept_while_training_uses_its_own_weights(tmp_path):
    model, raw, evaluated = _fit(tmp_path, k=2)
    assert len(raw) == 4 and all(not torch.equal(raw[i], raw[i + 1]) for i in range(3))  # the weights moved
    assert torch.equal(evaluated[0], raw[0])  # one evaluation so far: itself
    for e in range(1, 4):
        assert torch.allclose(evaluated[e], (raw[e - 1] + raw[e]) / 2, atol=1e-7)
    assert torch.equal(model.bert.weight.detach(), raw[-1])  # training went on from the raw weights
    best = load_state(tmp_path / "best.safetensors")
    assert best["epoch"] == 2 and torch.allclose(best["model"]["bert.weight"], (raw[0] + raw[1]) / 2, atol=1e-7)


def test_off_is_no_callback_and_one_is_off():
    assert CheckpointAverageTechnique().callback(CheckpointAverageConfig(0), _Toy()) is None
    assert CheckpointAverageTechnique().callback(CheckpointAverageConfig(1), _Toy()) is None
    with pytest.raises(ValueError, match="average_evaluations"):
        CheckpointAverageConfig(-1)


def test_resume_continues_the_average_exactly(tmp_path):
    _, _, straight = _fit(tmp_path / "a", k=3)
    _fit(tmp_path / "b", k=3, interrupt_at=3)  # dies inside the third evaluation: the second's checkpoint holds 2
    _, _, resumed = _fit(tmp_path / "b", k=3, resume=True, done=2)
    assert len(resumed) == 2  # evaluations 3 and 4
    for a, b in zip(straight[2:], resumed):
        assert torch.equal(a, b)


def test_it_does_not_combine_with_ema(tmp_path, capsys):
    ema = EMATechnique().callback(EMAConfig(0.9), _Toy())
    with pytest.raises(ValueError, match="CheckpointAverageCallback and EMACallback both define evaluated_model"):
        _fit(tmp_path, k=2, extra=(ema,))  # the Trainer: two callbacks in one role
    from tasks import multitask
    with pytest.raises(SystemExit):  # the CLI says so when parsing, before any phase or step
        multitask.parse_args(["--average_evaluations", "2", "--ema_decay", "0.9"])
    assert "does not combine with --ema_decay" in capsys.readouterr().err


def test_the_cli_keeps_and_saves_the_averaged_weights(tiny_checkpoint, tiny_data, tmp_path):
    from tasks import multitask
    from tasks.domain.model import MultitaskBert
    out = tmp_path / "run"
    multitask.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--epochs", "2", "--batch_size", "8",
                    "--out_dir", str(out), "--predictions_dir", str(tmp_path / "pred"), "--average_evaluations", "2"])
    last, best = load_state(out / "last.safetensors"), load_state(out / "best.safetensors")
    (state,) = [c for c in last["callbacks"] if "snapshots" in c]
    assert len(state["snapshots"]) == 2
    assert best["epoch"] == 2  # (deterministic) so that what is checked is a mean of two, not one snapshot
    expected = average_state(state["snapshots"])
    assert any(not torch.equal(v, state["snapshots"][-1][k]) for k, v in expected.items())  # the mean moved
    for name, value in best["model"].items():
        assert torch.allclose(value, expected[name], atol=1e-6), name
    saved = MultitaskBert.from_pretrained(out / "model").state_dict()
    assert set(saved) <= set(expected)
    for name, value in saved.items():  # the model folder holds the kept (averaged) weights
        assert torch.allclose(value, expected[name], atol=1e-6), name
