"""The shared training loop: schedules, overfitting one batch per task, resume, PCGrad, Child-Tuning flags."""
from collections import Counter

import pytest
import torch

from minibert import BertModel, Tokenizer
from tasks.domain.model import MultitaskBert
from tasks.domain.processors import PROCESSORS
from tasks.engine.checkpointing import load_state
from tasks.launch.run import make_evaluator
from tasks.engine.sampling import task_schedule
from tasks.techniques.child_tuning import ChildTuningConfig, ChildTuningTechnique
from tasks.techniques.ema import EMAConfig, EMATechnique
from tasks.techniques.pcgrad import PCGradConfig, PCGradTechnique
from tasks.engine import TrainConfig, Trainer


def _callbacks(model, seed=11711, pcgrad=False, child_tuning="none", child_tuning_p=0.3, ema_decay=0.0):
    """The techniques' callbacks, as the CLIs build them from their flags."""
    found = [PCGradTechnique().callback(PCGradConfig(pcgrad), model, seed),
             ChildTuningTechnique().callback(ChildTuningConfig(child_tuning, child_tuning_p), model, seed),
             EMATechnique().callback(EMAConfig(ema_decay), model, seed)]
    return [c for c in found if c is not None]

SIZES = {"sst": 5, "para": 9, "sts": 3}


@pytest.mark.parametrize("strategy", ["proportional", "round_robin", "annealed"])
def test_task_schedule_is_pure_and_covers_the_epoch(strategy):
    steps = task_schedule(SIZES, strategy, 0, epoch=1, epochs=3, seed=7)
    assert steps == task_schedule(SIZES, strategy, 0, epoch=1, epochs=3, seed=7)
    assert sum(len(s) for s in steps) == sum(SIZES.values()) and all(len(s) <= 3 for s in steps)
    counts = Counter(n for s in steps for n in s)
    if strategy == "proportional":
        assert counts == Counter(SIZES)
    if strategy == "round_robin":
        assert steps[0] == ["sst", "para", "sts"] and max(counts.values()) - min(counts.values()) <= 1


def test_annealed_sampling_flattens_over_epochs():
    big = {"a": 900, "b": 100}
    first = Counter(n for s in task_schedule(big, "annealed", 1, 0, 5, 0) for n in s)
    last = Counter(n for s in task_schedule(big, "annealed", 1, 4, 5, 0) for n in s)
    assert first["b"] / 1000 == pytest.approx(0.1, abs=0.03)  # α = 1: proportional
    assert last["b"] / 1000 == pytest.approx(100 ** 0.2 / (100 ** 0.2 + 900 ** 0.2), abs=0.04)  # α = 0.2


def _setup(tiny_checkpoint, tiny_data, tasks=("sst", "para", "sts"), n=None, batch_size=8, para_head="cross"):
    torch.manual_seed(0)
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    encoder = BertModel.from_pretrained(tiny_checkpoint, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = MultitaskBert(encoder, tasks, para_head=para_head)
    procs = {}
    for name in tasks:
        task = PROCESSORS[name]
        prefix = {"sst": "ids-sst", "para": "quora", "sts": "sts"}[name]
        procs[name] = task.from_files(name, tok, train=tiny_data / f"{prefix}-train.csv",
                                      dev=tiny_data / f"{prefix}-dev.csv", max_examples=n, batch_size=batch_size,
                                      **({"form": para_head} if name == "para" else {}))
    return model, procs


@pytest.mark.parametrize("task", ["sst", "para", "sts"])
def test_loop_overfits_one_tiny_batch(tiny_checkpoint, tiny_data, tmp_path, task):
    model, procs = _setup(tiny_checkpoint, tiny_data, (task,), n=8, batch_size=8)
    config = TrainConfig(epochs=1, lr=1e-3, warmup_ratio=0.0, schedule="constant", weight_decay=0.0,
                         out_dir=str(tmp_path))
    trainer = Trainer(model, procs, config, evaluate=lambda m: {"score": 0.0}, show_progress=False)
    batch = next(procs[task].batches(0))

    class Same:  # the same batch, again and again
        def __next__(self):
            return batch

    first = trainer.training_step([[task]], {task: Same()})[task]
    for _ in range(150):
        last = trainer.training_step([[task]], {task: Same()})[task]
    assert last <= 0.1 * first, (first, last)


def _run(tiny_checkpoint, tiny_data, out_dir, epochs, interrupt_at=None, resume=False, **config):
    model, procs = _setup(tiny_checkpoint, tiny_data)
    evaluate = make_evaluator(procs, "cpu")
    calls = []

    def maybe_interrupt(m):
        calls.append(1)
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return evaluate(m)

    techniques = {k: config.pop(k) for k in list(config) if k in ("pcgrad", "child_tuning", "ema_decay")}
    cfg = TrainConfig(epochs=epochs, lr=3e-4, out_dir=str(out_dir), resume=resume, **config)
    trainer = Trainer(model, procs, cfg, maybe_interrupt, _callbacks(model, **techniques), show_progress=False)
    try:
        trainer.fit()
    except KeyboardInterrupt:
        pass
    return model, trainer


@pytest.mark.parametrize("extra", [{}, {"pcgrad": True, "child_tuning": "F"}, {"ema_decay": 0.9}],
                         ids=["plain", "pcgrad+childF", "ema"])
def test_resume_continues_to_the_same_result(tiny_checkpoint, tiny_data, tmp_path, extra):
    straight, t1 = _run(tiny_checkpoint, tiny_data, tmp_path / "a", epochs=3, **extra)
    _run(tiny_checkpoint, tiny_data, tmp_path / "b", epochs=3, interrupt_at=2, **extra)  # dies in epoch 2's eval
    resumed, t2 = _run(tiny_checkpoint, tiny_data, tmp_path / "b", epochs=3, resume=True, **extra)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert [h["dev"] for h in t1.progress.history] == [h["dev"] for h in t2.progress.history][-3:]
    assert [h.get("pcgrad") for h in t1.progress.history] == [h.get("pcgrad") for h in t2.progress.history][-3:]
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and (tmp_path / "a" / "best.safetensors").is_file()


class _Toy(torch.nn.Module):
    """A shared 'encoder' (bert.*) and two scalar task losses whose gradients we control."""

    def __init__(self):
        super().__init__()
        self.bert = torch.nn.Linear(4, 1, bias=False)


class _Proc:
    def __init__(self, direction):
        self.direction = torch.tensor(direction)

    def num_batches(self):
        return 1

    def batches(self, epoch):
        return iter([{"x": self.direction}])

    def loss(self, model, batch):  # gradient w.r.t. the shared weight is exactly `direction`
        return (model.bert.weight * batch["x"]).sum()


@pytest.mark.parametrize("conflict", [False, True])
def test_pcgrad_changes_the_update_only_when_tasks_conflict(tmp_path, conflict):
    procs = {"a": _Proc([1.0, 0.0, 0.0, 0.0]), "b": _Proc([-1.0 if conflict else 1.0, 1.0, 0.0, 0.0])}
    weights = []
    for pcgrad in (False, True):
        torch.manual_seed(0)
        model = _Toy()
        cfg = TrainConfig(epochs=1, lr=0.1, warmup_ratio=0.0, schedule="constant", weight_decay=0.0,
                          max_grad_norm=0.0, out_dir=str(tmp_path / str(pcgrad)))
        Trainer(model, procs, cfg, lambda m: {"score": 0.0}, _callbacks(model, pcgrad=pcgrad), show_progress=False).fit()
        weights.append(model.bert.weight.detach().clone())
    assert torch.equal(weights[0], weights[1]) != conflict


def test_pcgrad_records_per_evaluation_how_many_tasks_each_step_held_and_how_often_each_pair_conflicted(tmp_path):
    # gradients fixed by construction: cos(a, b) = −1/√2 (they conflict), cos(a, c) = 0, cos(b, c) = 0
    class Many(_Proc):
        def __init__(self, direction, n):
            super().__init__(direction)
            self.n = n

        def num_batches(self):
            return self.n

        def batches(self, epoch):
            return iter([{"x": self.direction}] * self.n)

    procs = {"a": Many([1.0, 0.0, 0.0, 0.0], 6), "b": Many([-1.0, 1.0, 0.0, 0.0], 4), "c": Many([0.0, 0.0, 1.0, 0.0], 2)}
    torch.manual_seed(0)
    model = _Toy()
    cfg = TrainConfig(epochs=2, lr=0.1, warmup_ratio=0.0, schedule="constant", out_dir=str(tmp_path), seed=3)
    trainer = Trainer(model, procs, cfg, lambda m: {"score": 0.0}, _callbacks(model, pcgrad=True), show_progress=False)
    trainer.fit()
    for epoch, record in enumerate(trainer.progress.history):  # each evaluation counts its own epoch's steps only
        steps = [set(s) for s in task_schedule({"a": 6, "b": 4, "c": 2}, "proportional", 0, epoch, 2, 3)]
        assert record["pcgrad"]["steps_by_tasks"] == {str(k): v for k, v in sorted(Counter(map(len, steps)).items())}
        shared = {pair: sum(set(pair.split("/")) <= s for s in steps) for pair in ("a/b", "a/c", "b/c")}
        r = round(-1 / 2 ** 0.5, 4)
        expected = {"a/b": {"steps": shared["a/b"], "conflicting": 1.0, "mean_cosine": r, "mean_conflicting_cosine": r},
                    "a/c": {"steps": shared["a/c"], "conflicting": 0.0, "mean_cosine": 0.0, "mean_conflicting_cosine": 0.0},
                    "b/c": {"steps": shared["b/c"], "conflicting": 0.0, "mean_cosine": 0.0, "mean_conflicting_cosine": 0.0}}
        assert record["pcgrad"]["pairs"] == {k: v for k, v in expected.items() if v["steps"]}
        assert shared["a/b"] > 0
    assert "pcgrad" in load_state(tmp_path / "last.safetensors")["history"][-1]


def test_pcgrad_metrics_by_hand_then_reset():
    from tasks.techniques.pcgrad import PCGradCallback
    callback = PCGradCallback([torch.nn.Parameter(torch.zeros(1))], seed=0)
    callback._count(["a", "b"], torch.tensor([[1.0, -0.2], [-0.2, 1.0]]))  # a conflict of cosine −0.2
    callback._count(["b", "a"], torch.tensor([[1.0, 0.4], [0.4, 1.0]]))  # the same pair, either order, no conflict
    callback._count(["a"], torch.tensor([[1.0]]))  # a step with one task: nothing to project
    assert callback.on_evaluate(None) == {"pcgrad": {"steps_by_tasks": {"1": 1, "2": 2}, "pairs": {"a/b": {
        "steps": 2, "conflicting": 0.5, "mean_cosine": 0.1, "mean_conflicting_cosine": -0.2}}}}
    assert callback.on_evaluate(None) == {"pcgrad": {"steps_by_tasks": {}, "pairs": {}}}  # counted since the last call


def test_loss_weight_scales_a_tasks_gradient_and_the_reported_loss_stays_unweighted(tmp_path):
    # equal and opposite gradients cancel; weighting one task 2x leaves its direction in the step
    moved = {}
    for weight in (1.0, 2.0):
        procs = {"a": _Proc([1.0, 0.0, 0.0, 0.0]), "b": _Proc([-1.0, 0.0, 0.0, 0.0])}
        procs["b"].loss_weight = weight
        torch.manual_seed(0)
        model = _Toy()
        before = model.bert.weight.detach().clone()
        cfg = TrainConfig(epochs=1, lr=0.1, warmup_ratio=0.0, schedule="constant", weight_decay=0.0,
                          max_grad_norm=0.0, out_dir=str(tmp_path / str(weight)))
        trainer = Trainer(model, procs, cfg, lambda m: {"score": 0.0}, show_progress=False)
        trainer.fit()
        moved[weight] = model.bert.weight.detach() - before
        unweighted = (before * torch.tensor([-1.0, 0.0, 0.0, 0.0])).sum().item()
        assert trainer.progress.history[0]["train_loss"]["b"] == pytest.approx(unweighted, abs=1e-6)
    assert torch.equal(moved[1.0], torch.zeros(1, 4))
    assert moved[2.0][0, 0] > 0.09 and torch.equal(moved[2.0][0, 1:], torch.zeros(3))  # down the net gradient −1


def test_ema_is_the_moving_average_of_the_weights_and_is_what_gets_evaluated_and_kept(tmp_path):
    decay, seen = 0.7, []

    class Recording(_Proc):
        def num_batches(self):
            return 4

        def batches(self, epoch):
            return iter([{"x": self.direction}] * 4)

        def loss(self, model, batch):
            seen.append(model.bert.weight.detach().clone())  # the weights after the previous step
            return super().loss(model, batch)

    torch.manual_seed(0)
    model = _Toy()
    evaluated = []
    cfg = TrainConfig(epochs=1, lr=0.1, warmup_ratio=0.0, schedule="constant", weight_decay=0.0, max_grad_norm=0.0,
                      out_dir=str(tmp_path))
    trainer = Trainer(model, {"a": Recording([1.0, -2.0, 0.0, 0.5])}, cfg,
                      lambda m: evaluated.append(m.bert.weight.detach().clone()) or {"score": 0.0},
                      _callbacks(model, ema_decay=decay), show_progress=False)
    trainer.fit()
    after_each_step = seen[1:] + [model.bert.weight.detach().clone()]
    expected = after_each_step[0]  # the first update copies the weights
    for w in after_each_step[1:]:
        expected = decay * expected + (1 - decay) * w
    assert not torch.allclose(expected, model.bert.weight)  # the average lags the moving weights
    assert torch.allclose(evaluated[0], expected, atol=1e-7)
    best = load_state(tmp_path / "best.safetensors")["model"]
    assert torch.allclose(best["bert.weight"], expected, atol=1e-7)
    with pytest.raises(ValueError, match="ema_decay"):
        EMAConfig(ema_decay=1.0)


def test_child_tuning_off_is_bit_identical_and_d_freezes_unchosen_weights(tiny_checkpoint, tiny_data, tmp_path):
    plain, _ = _run(tiny_checkpoint, tiny_data, tmp_path / "plain", epochs=1)
    off, _ = _run(tiny_checkpoint, tiny_data, tmp_path / "off", epochs=1, child_tuning="none")
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), off.state_dict().values()))
    model, procs = _setup(tiny_checkpoint, tiny_data)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(epochs=1, lr=1e-3, weight_decay=0.0, out_dir=str(tmp_path / "d"))
    callbacks = _callbacks(model, child_tuning="D", child_tuning_p=0.2)
    trainer = Trainer(model, procs, cfg, lambda m: {"score": 0.0}, callbacks, show_progress=False)
    trainer.fit()
    child = callbacks[0].child
    assert 0.15 < child.kept_fraction() < 0.25
    for name, mask in child.masks.items():
        moved = model.get_parameter(name).detach() != before[name]
        assert not (moved & ~mask).any(), f"{name}: a weight outside the Child-Tuning-D mask moved"


def test_child_tuning_f_masks_the_clipped_gradient_at_the_update(tiny_checkpoint, tiny_data, tmp_path, monkeypatch):
    """The step's update sees g̃ = clip(g) ⊙ M / p: a trainer that never applies -F, or masks before clipping,
    fails here (the gradients are recorded at clipping time and at the optimizer's step)."""
    from optim import AdamW
    from tasks.engine import trainer as loop
    model, procs = _setup(tiny_checkpoint, tiny_data, ("sst",), n=8, batch_size=8)
    p, seen = 0.3, {}
    real_clip, real_step = loop.torch.nn.utils.clip_grad_norm_, AdamW.step

    def clip(params, max_norm):
        params = list(params)
        seen["before_clip"] = {id(q): q.grad.clone() for q in params if q.grad is not None}
        norm = real_clip(params, max_norm)
        seen["clipped"] = {id(q): q.grad.clone() for q in params if q.grad is not None}
        return norm

    def step(self, closure=None):
        seen["at_step"] = {id(q): q.grad.clone() for g in self.param_groups for q in g["params"] if q.grad is not None}
        return real_step(self, closure)

    monkeypatch.setattr(loop.torch.nn.utils, "clip_grad_norm_", clip)
    monkeypatch.setattr(AdamW, "step", step)
    cfg = TrainConfig(epochs=1, lr=1e-3, max_grad_norm=1e-3, out_dir=str(tmp_path))  # the clip binds
    trainer = Trainer(model, procs, cfg, lambda m: {"score": 0.0}, _callbacks(model, child_tuning="F", child_tuning_p=p),
                      show_progress=False)
    trainer.fit()
    layer = model.bert.layers[0].ffn.up.weight
    g_raw, g_clipped, g_step = (seen[k][id(layer)] for k in ("before_clip", "clipped", "at_step"))
    assert (g_raw != 0).all() and not torch.allclose(g_raw, g_clipped)  # unmasked when clipped; the clip acted
    kept = g_step != 0
    assert 0.2 < kept.float().mean() < 0.4  # -F was applied: about p of the elements kept
    assert torch.allclose(g_step[kept], g_clipped[kept] / p)  # ... to the clipped gradient, rescaled by 1/p
