"""Child-Tuning (Xu et al., "Raise a Child in Large Language Model", EMNLP 2021): update only a "child"
network by masking gradients between backward and optimizer.step(), so it works with any optimizer.

Child-Tuning-F (task-free): a fresh Bernoulli mask at every step, each gradient element kept with
probability p_F and rescaled so that the masked gradient is unbiased:

    g̃ = g ⊙ M / p_F,   M ~ Bernoulli(p_F) elementwise,   E[g̃] = g

Unbiased for SGD, but not a same-size step under Adam: Adam divides by √E[g̃²] = |g| / √p_F, so a steady
gradient moves a weight by about √p_F · lr a step (0.55 · lr at p_F = 0.3), as if the learning rate were
smaller. Compare -F with plain fine-tuning each at its own tuned learning rate.

Child-Tuning-D (task-driven): one pass over the training data estimates each encoder weight's importance by
the empirical Fisher information, the mean squared gradient over the N batches, each tensor's gradient first
clipped to norm c (the reference's `clip_grad_norm_(params, max_grad_norm)`, c = 1.0, inside its Fisher loop):

    F(w) = (1/N) Σₙ (clip_c(∂Lₙ/∂W))²_w

and keeps, once and for all, the top p_D fraction of encoder weights ranked globally across all tensors;
the others' gradients are zeroed (not rescaled). Embeddings and task heads are not masked.

Both mask gradients only, as the reference does (inside its AdamW's step): decoupled weight decay still
shrinks the weights outside the child network, and under -F Adam's momentum still moves a weight whose
gradient this step's mask dropped.

Wiring in a training loop, after any gradient clipping (where the reference code applies it, inside its
optimizer's step) and before the step:

    child = make_child_tuning(args.child_tuning, args.reserve_p, model=model, batches=..., loss_fn=...)
    ...
    loss.backward()
    if child is not None:
        child.apply(model)
    optimizer.step()
"""
from __future__ import annotations

import re
from typing import Callable, Dict, Iterable, Optional, Union

import torch
from torch import nn

_ENCODER_LAYER = re.compile(r"(^|\.)(layer|layers|blocks)\.\d+\.")


def is_encoder_layer(name: str) -> bool:
    """Parameters inside a numbered encoder layer ("encoder.layer.3.…" in HuggingFace's names, "layers.3.…"
    in minibert's): the reference's `'layer' in name`, without also catching embeddings' or heads' LayerNorms."""
    return _ENCODER_LAYER.search(name) is not None


def _check_reserve_p(reserve_p: float) -> None:
    if not isinstance(reserve_p, (int, float)) or isinstance(reserve_p, bool) or not 0.0 < reserve_p <= 1.0:
        raise ValueError(f"Invalid reserve_p: {reserve_p!r} (must be in (0, 1])")


def _params_with_grad(model_or_params: Union[nn.Module, Iterable[torch.Tensor]]):
    if isinstance(model_or_params, nn.Module):
        return [p for p in model_or_params.parameters() if p.grad is not None]
    return [p for p in model_or_params if p.grad is not None]


# --- Child-Tuning-F -------------------------------------------------------------------------------------

def child_tuning_f(grad: torch.Tensor, reserve_p: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """g ⊙ M / p with M ~ Bernoulli(p) elementwise: a new tensor, unbiased for g."""
    _check_reserve_p(reserve_p)
    mask = torch.empty_like(grad).bernoulli_(reserve_p, generator=generator)
    return grad * (mask / reserve_p)


class ChildTuningF:
    """Child-Tuning-F for any optimizer: `apply(model)` masks every existing gradient in place, a fresh mask
    per call (the reference masks all parameters the optimizer updates, heads included)."""

    def __init__(self, reserve_p: float, generator: Optional[torch.Generator] = None):
        _check_reserve_p(reserve_p)
        self.reserve_p = float(reserve_p)
        self.generator = generator

    @torch.no_grad()
    def apply(self, model_or_params: Union[nn.Module, Iterable[torch.Tensor]]) -> None:
        for p in _params_with_grad(model_or_params):
            p.grad.copy_(child_tuning_f(p.grad, self.reserve_p, self.generator))

    def state_dict(self) -> dict:
        """reserve_p and the generator's state, so that a resumed run draws the same masks."""
        return {"reserve_p": self.reserve_p,
                "generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        _check_reserve_p(state["reserve_p"])
        self.reserve_p = float(state["reserve_p"])
        if state.get("generator") is not None and self.generator is not None:
            self.generator.set_state(state["generator"])


# --- Child-Tuning-D -------------------------------------------------------------------------------------

def empirical_fisher(model: nn.Module, batches: Iterable, loss_fn: Callable[[nn.Module, object], torch.Tensor],
                     param_filter: Callable[[str], bool] = is_encoder_layer, max_batches: Optional[int] = None,
                     max_grad_norm: Optional[float] = 1.0) -> Dict[str, torch.Tensor]:
    """F(w) = mean over batches of (∂L/∂w)², for the parameters whose name passes `param_filter`.

    loss_fn(model, batch) returns the batch's scalar loss. The model's mode (train/eval) is left as it is.
    max_grad_norm clips each tensor's gradient to that norm before squaring, as the reference code does
    (its max_grad_norm, 1.0 by default); None or 0 uses the raw gradients. max_batches None or 0 reads every
    batch (the reference: the whole training set). Leaves every .grad as None afterwards.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad and param_filter(n)]
    if not names:
        raise ValueError("param_filter selected no trainable parameter of the model")
    params = dict(model.named_parameters())
    fisher = {n: torch.zeros_like(params[n]) for n in names}
    count = 0
    for batch in batches:
        if max_batches and count >= max_batches:
            break
        model.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
        for n in names:
            if params[n].grad is None:  # a parameter this batch does not reach adds 0
                continue
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params[n], max_grad_norm)  # this tensor alone, as the reference
            fisher[n] += params[n].grad.detach() ** 2
        count += 1
    model.zero_grad(set_to_none=True)
    if count == 0:
        raise ValueError("batches is empty: the Fisher information needs at least one batch")
    return {n: f / count for n, f in fisher.items()}


def top_fraction_mask(scores: Dict[str, torch.Tensor], reserve_p: float) -> Dict[str, torch.Tensor]:
    """Boolean masks keeping the k = round(p·n) largest of all n scores, ranked globally across the tensors.

    The threshold is the k-th largest value, found by selection (torch.kthvalue: a quickselect, no full sort).
    Everything above it is kept; of the values equal to it, the first ones in order (tensors in dict order,
    elements in flattened order) fill the remaining places, so exactly k are kept even with ties. (The
    reference keeps F ≥ np.percentile(F, 100 · (1 − p)): the same set up to ties and the percentile's
    interpolation between two neighbouring values.)
    """
    _check_reserve_p(reserve_p)
    if not scores:
        raise ValueError("scores is empty")
    flat = torch.cat([s.detach().reshape(-1) for s in scores.values()])
    n = flat.numel()
    k = min(n, max(1, round(reserve_p * n)))
    threshold = torch.kthvalue(flat, n - k + 1).values  # the k-th largest = the (n − k + 1)-th smallest
    keep = flat > threshold
    ties = torch.nonzero(flat == threshold).reshape(-1)
    keep[ties[: k - int(keep.sum())]] = True
    masks, offset = {}, 0
    for name, s in scores.items():
        masks[name] = keep[offset:offset + s.numel()].view(s.shape).clone()
        offset += s.numel()
    return masks


def fisher_mask(model: nn.Module, batches: Iterable, loss_fn: Callable[[nn.Module, object], torch.Tensor],
                reserve_p: float, param_filter: Callable[[str], bool] = is_encoder_layer,
                max_batches: Optional[int] = None, max_grad_norm: Optional[float] = 1.0) -> Dict[str, torch.Tensor]:
    """Child-Tuning-D's masks: the top reserve_p fraction of the encoder's weights by empirical Fisher."""
    _check_reserve_p(reserve_p)
    fisher = empirical_fisher(model, batches, loss_fn, param_filter, max_batches, max_grad_norm)
    return top_fraction_mask(fisher, reserve_p)


class ChildTuningD:
    """A fixed gradient mask per named parameter; `apply(model)` zeroes the masked gradient elements in
    place. Parameters without a mask (embeddings, heads) keep their full gradients."""

    def __init__(self, masks: Dict[str, torch.Tensor]):
        self.masks = {n: m.bool() for n, m in masks.items()}

    @classmethod
    def from_fisher(cls, model: nn.Module, batches: Iterable, loss_fn: Callable[[nn.Module, object], torch.Tensor],
                    reserve_p: float, param_filter: Callable[[str], bool] = is_encoder_layer,
                    max_batches: Optional[int] = None, max_grad_norm: Optional[float] = 1.0) -> "ChildTuningD":
        return cls(fisher_mask(model, batches, loss_fn, reserve_p, param_filter, max_batches, max_grad_norm))

    def kept_fraction(self) -> float:
        """The fraction of masked-tensor elements that are updated (≈ reserve_p)."""
        kept = sum(int(m.sum()) for m in self.masks.values())
        return kept / max(1, sum(m.numel() for m in self.masks.values()))

    def state_dict(self) -> dict:
        """The masks (one bool per masked weight), so that a resumed run needs no second Fisher pass."""
        return {"masks": {n: m.clone() for n, m in self.masks.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.masks = {n: m.bool() for n, m in state["masks"].items()}

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        missing = [n for n in self.masks if n not in params]
        if missing:
            raise ValueError(f"model has no parameter named {missing[0]!r} (masks were made for another model)")
        for name, mask in self.masks.items():
            p = params[name]
            if p.grad is not None:
                p.grad.mul_(mask.to(device=p.grad.device))


CHILD_TUNING_MODES = ("F", "D")


def make_child_tuning(mode: Optional[str], reserve_p: float = 0.3, *, model: Optional[nn.Module] = None,
                      batches: Optional[Iterable] = None, loss_fn: Optional[Callable] = None,
                      generator: Optional[torch.Generator] = None, **fisher_kwargs):
    """From training-loop flags: None (also "none"/"off"/"") → None, and nothing is touched or drawn;
    "F" → ChildTuningF(reserve_p); "D" → ChildTuningD from one Fisher pass over `batches` with `loss_fn`."""
    if mode is None or str(mode).lower() in ("", "none", "off"):
        return None
    if str(mode).upper() not in CHILD_TUNING_MODES:
        raise ValueError(f"Invalid mode: {mode!r} (must be None, 'F' or 'D')")
    if str(mode).upper() == "F":
        return ChildTuningF(reserve_p, generator)
    if model is None or batches is None or loss_fn is None:
        raise ValueError("Child-Tuning-D needs model, batches and loss_fn to compute the Fisher information")
    return ChildTuningD.from_fisher(model, batches, loss_fn, reserve_p, **fisher_kwargs)
