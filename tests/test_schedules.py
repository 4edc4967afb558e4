"""Learning-rate schedules: hand-computed values, HuggingFace's formulas as the reference, the scheduler."""
import math

import pytest
import torch
from torch import nn

from optim import AdamW, constant, cosine, linear_warmup_decay, make_scheduler


def test_constant_by_hand():
    assert [constant(s) for s in range(3)] == [1.0, 1.0, 1.0]
    assert [constant(s, warmup_steps=4) for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_linear_warmup_decay_by_hand():
    # W=2, T=6: warmup 0, 1/2; then (6 − s)/4 from s=2; 0 from s=6 on.
    got = [linear_warmup_decay(s, warmup_steps=2, total_steps=6) for s in range(8)]
    assert got == [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert linear_warmup_decay(0, 0, 4) == 1.0


def test_cosine_by_hand():
    # W=2, T=6: warmup, then ½(1 + cos(π·(s − 2)/4)): 1, ½ + √2/4, ½, ½ − √2/4, 0, and 0 after T.
    got = [cosine(s, warmup_steps=2, total_steps=6) for s in range(8)]
    expected = [0.0, 0.5, 1.0, 0.5 + math.sqrt(2) / 4, 0.5, 0.5 - math.sqrt(2) / 4, 0.0, 0.0]
    assert got == pytest.approx(expected, abs=1e-15)


def _hf_multipliers(transformers, name, warmup, total):
    """The multipliers a transformers scheduler applies, read from a throwaway optimizer's lr (base lr 1)."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    make = {"constant": lambda: transformers.get_constant_schedule_with_warmup(opt, warmup),
            "linear": lambda: transformers.get_linear_schedule_with_warmup(opt, warmup, total),
            "cosine": lambda: transformers.get_cosine_schedule_with_warmup(opt, warmup, total)}[name]
    sched, out = make(), []
    for _ in range(total + 1):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("name, fn", [("constant", constant), ("linear", linear_warmup_decay), ("cosine", cosine)])
@pytest.mark.parametrize("warmup, total", [(0, 10), (3, 10), (10, 25)])
def test_schedules_match_huggingface(name, fn, warmup, total):
    transformers = pytest.importorskip("transformers")
    ref = _hf_multipliers(transformers, name, warmup, total)
    ours = [fn(s, warmup_steps=warmup, total_steps=total) for s in range(total + 1)]
    assert ours == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("name", ["constant", "linear", "cosine"])
def test_make_scheduler_applies_the_pure_function_to_every_group(name):
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    opt = AdamW([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    sched = make_scheduler(opt, name, warmup_steps=2, total_steps=8)
    fn = {"constant": constant, "linear": linear_warmup_decay, "cosine": cosine}[name]
    for step in range(10):
        mult = fn(step, warmup_steps=2, total_steps=8)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * mult, 0.5 * mult], abs=1e-15)
        a.grad, b.grad = torch.ones(2), torch.ones(2)
        opt.step()
        sched.step()


def test_scheduler_resumes_from_state_dict():
    def run(steps, state=None):
        opt = AdamW([nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make_scheduler(opt, "linear", warmup_steps=3, total_steps=10)
        if state is not None:
            sched.load_state_dict(state)
        for _ in range(steps):
            opt.step()
            sched.step()
        return sched, opt.param_groups[0]["lr"]

    first, _ = run(4)
    resumed, lr = run(2, first.state_dict())
    assert resumed.last_epoch == 6
    assert lr == pytest.approx(linear_warmup_decay(6, 3, 10))


@pytest.mark.parametrize("call, name", [
    (lambda: linear_warmup_decay(0, -1, 10), "warmup_steps"),
    (lambda: linear_warmup_decay(0, 11, 10), "warmup_steps"),
    (lambda: linear_warmup_decay(0, 1, 0), "total_steps"),
    (lambda: cosine(0, 1.5, 10), "warmup_steps"),
    (lambda: cosine(0, 1, None), "total_steps"),
    (lambda: constant(0, warmup_steps=-2), "warmup_steps"),
    (lambda: make_scheduler(AdamW([nn.Parameter(torch.zeros(1))]), "step"), "name"),
    (lambda: make_scheduler(AdamW([nn.Parameter(torch.zeros(1))]), "linear", 2), "total_steps"),
])
def test_invalid_arguments_raise_value_error_naming_them(call, name):
    with pytest.raises(ValueError, match=name):
        call()
