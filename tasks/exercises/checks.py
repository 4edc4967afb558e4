"""One check per exercise: the comparisons that prove the reference, on small inputs (checks_model.py has the
model's pieces). Each exercise is graded on its own code: where it calls another exercise's function, the check
puts its own formula in that function's place.

References used: torch's own functions (F.gelu, F.layer_norm, torch.optim.AdamW), formulas written out here
in float64 (attention, PCGrad, mean pooling, Pearson's r), and the stored tensors of stored.py (the
coursework's AdamW weights; MiniLM's embeddings and layer 0).
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Callable, Dict

import numpy as np
import torch
import torch.nn.functional as F

from . import checks_model
from .checks_model import merge as _merge, oracle_attention, split as _split
from .grading import compare, expect
from .stored import coursework_adamw, load


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def check_gelu():
    from minibert.functional import gelu
    x = torch.cat([torch.linspace(-6, 6, 97, dtype=torch.float64), _randn(50)]).requires_grad_(True)
    y = gelu(x)
    compare("gelu(x)", y, F.gelu(x.detach()), atol=1e-9, rtol=1e-7)
    y.sum().backward()
    phi = torch.exp(-x.detach() ** 2 / 2) / math.sqrt(2 * math.pi)
    compare("the gradient gelu'(x) = Φ(x) + x·φ(x)", x.grad, 0.5 * (1 + torch.erf(x.detach() / math.sqrt(2))) + x.detach() * phi,
            atol=1e-9, rtol=1e-7)


def check_layer_norm():
    from minibert.functional import layer_norm
    x = (3 * _randn(4, 7, 16) + 2).requires_grad_(True)
    w, b = _randn(16, seed=1).requires_grad_(True), _randn(16, seed=2).requires_grad_(True)
    for eps in (1e-5, 0.1):
        y = layer_norm(x, w, b, eps)
        ref_x, ref_w, ref_b = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
        ref = F.layer_norm(ref_x, (16,), ref_w, ref_b, eps)
        compare(f"layer_norm output (eps={eps})", y, ref, atol=1e-9, rtol=1e-7)
        probe = _randn(4, 7, 16, seed=3)
        grads = torch.autograd.grad((y * probe).sum(), (x, w, b))
        ref_grads = torch.autograd.grad((ref * probe).sum(), (ref_x, ref_w, ref_b))
        for name, g, r in zip(("x", "weight", "bias"), grads, ref_grads):
            compare(f"gradient w.r.t. {name} (eps={eps})", g, r, atol=1e-9, rtol=1e-7)


def check_attention_mask():
    from minibert.functional import additive_attention_mask
    keep = torch.tensor([[1, 1, 0], [1, 0, 0]])
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        mask = additive_attention_mask(keep, dtype)
        expect(isinstance(mask, torch.Tensor) and mask.dtype == dtype,
               f"the mask for {dtype} has dtype {getattr(mask, 'dtype', type(mask).__name__)}, expected {dtype}")
        expected = torch.where(keep.bool(), 0.0, torch.finfo(dtype).min)[:, None, None, :].to(dtype)
        compare(f"the additive mask for {dtype} (0 to attend, finfo.min for padding)", mask, expected, atol=0, rtol=0)


def check_heads():
    from minibert.functional import merge_heads, split_heads
    x = _randn(2, 5, 12)
    for nh in (1, 3, 4):
        compare(f"split_heads(x, {nh}) (B, nh, T, hs)", split_heads(x, nh), _split(x, nh), atol=0, rtol=0)
    heads = _randn(2, 3, 5, 4, seed=1)
    compare("merge_heads(x) (B, T, C)", merge_heads(heads), _merge(heads), atol=0, rtol=0)
    compare("merge_heads of a transposed (non-contiguous) input", merge_heads(heads.transpose(2, 3)),
            _merge(heads.transpose(2, 3)), atol=0, rtol=0)
    compare("merge_heads(split_heads(x, 3)), which must be x", merge_heads(split_heads(x, 3)), x, atol=0, rtol=0)


def check_attention():
    from minibert.functional import attention
    q, k, v = (_randn(2, 3, 5, 4, seed=s).requires_grad_(True) for s in (1, 2, 3))
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    additive = (1.0 - keep.double())[:, None, None, :] * torch.finfo(torch.float64).min  # (B, 1, 1, T)
    probe = _randn(2, 3, 5, 4, seed=4)
    for label, mask in (("with padding", additive), ("without a mask", None)):
        context, probs = attention(q, k, v, mask)
        ref_context, ref_probs = oracle_attention(q, k, v, mask)
        compare(f"attention probabilities {label} (B, nh, T, T)", probs, ref_probs, atol=1e-9, rtol=1e-7)
        compare(f"attention context {label} (B, nh, T, hs)", context, ref_context, atol=1e-9, rtol=1e-7)
        grads = torch.autograd.grad((context * probe).sum(), (q, k, v))
        ref_grads = torch.autograd.grad((ref_context * probe).sum(), (q, k, v))
        for name, g, r in zip("qkv", grads, ref_grads):
            compare(f"gradient w.r.t. {name} {label}", g, r, atol=1e-9, rtol=1e-7)
    _, probs = attention(q, k, v, additive, dropout_p=0.5, training=True)
    compare("probabilities in training with dropout (returned before dropout)", probs,
            oracle_attention(q, k, v, additive)[1], atol=1e-9, rtol=1e-7)
    context, _ = attention(q, k, v, additive, dropout_p=0.5, training=False)
    compare("context with dropout_p=0.5 in evaluation (no dropout)", context, oracle_attention(q, k, v, additive)[0],
            atol=1e-9, rtol=1e-7)


def _adamw(mode, foreach=False):
    from optim.adamw import AdamW
    return lambda *a, **k: AdamW(*a, **k, mode=mode, foreach=foreach)


def check_adamw():
    stored = load()
    for correct_bias, key in ((True, "adamw.coursework"), (False, "adamw.coursework_no_bias_correction")):
        compare(f"weight after the coursework's 1000 AdamW steps (correct_bias={correct_bias})",
                coursework_adamw(_adamw("coursework"), correct_bias), stored[key], atol=1e-6, rtol=1e-4)
    lr, b1, b2, eps, wd, g = 0.1, 0.9, 0.999, 1e-6, 0.1, 0.5  # one scalar step, each equation by hand
    for mode in ("coursework", "torch"):
        for correct_bias in (True, False):
            p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
            p.grad = torch.tensor([g], dtype=torch.float64)
            _adamw(mode)([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, correct_bias=correct_bias).step()
            m, v = (1 - b1) * g, (1 - b2) * g * g
            c1, c2 = (1 - b1, 1 - b2) if correct_bias else (1.0, 1.0)
            if mode == "coursework":
                after = 1.0 - lr * math.sqrt(c2) / c1 * m / (math.sqrt(v) + eps)
                expected = after - lr * wd * after
            else:
                expected = (1 - lr * wd) - lr * (m / c1) / (math.sqrt(v / c2) + eps)
            compare(f"p after one step by hand (mode={mode!r}, correct_bias={correct_bias}, p=1, g=0.5, lr=0.1, "
                    f"weight_decay=0.1)", p.detach(), torch.tensor([expected], dtype=torch.float64), atol=1e-12, rtol=0)
    ours = coursework_adamw(_adamw("torch"), steps=300, eps=1e-6)
    torch_ref = coursework_adamw(lambda params, correct_bias, **k: torch.optim.AdamW(params, **k, foreach=False),
                                 steps=300, eps=1e-6)
    compare("weight after 300 steps of mode='torch' against torch.optim.AdamW", ours, torch_ref, atol=1e-6, rtol=1e-4)


def _pcgrad_reference(G: np.ndarray, seed: int) -> np.ndarray:
    """PCGrad in float64, drawing each task's order of the others as the reference does."""
    gen, T = torch.Generator().manual_seed(seed), G.shape[0]
    out = []
    for i in range(T):
        others = [j for j in range(T) if j != i]
        g = G[i].copy()
        for k in torch.randperm(T - 1, generator=gen).tolist():
            j = others[k]
            if g @ G[j] < 0 and G[j] @ G[j] > 0:
                g = g - (g @ G[j]) / (G[j] @ G[j]) * G[j]
        out.append(g)
    return np.stack(out)


def check_pcgrad():
    from optim.pcgrad import project_conflicting
    two = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    compare("2-D by hand: g₁ = (1, 0), g₂ = (−1, 1) become (0.5, 0.5), (0, 1)", project_conflicting(two),
            torch.tensor([[0.5, 0.5], [0.0, 1.0]], dtype=torch.float64), atol=1e-12, rtol=0)
    g1 = _randn(50, seed=1)
    g2 = -g1 + 0.3 * _randn(50, seed=2)  # conflicting
    d = g1 @ g2
    closed = torch.stack([g1 - d / (g2 @ g2) * g2, g2 - d / (g1 @ g1) * g1])
    compare("two conflicting tasks against the closed form gᵢ − (g₁·g₂ / ‖gⱼ‖²) gⱼ", project_conflicting([g1, g2]), closed,
            atol=1e-10, rtol=1e-8)
    G = torch.stack([_randn(40, seed=s) for s in range(4)] + [torch.zeros(40, dtype=torch.float64)])
    before = G.clone()
    got = project_conflicting(G, torch.Generator().manual_seed(7))
    compare("five tasks (one gradient zero) in the order torch.randperm(T − 1, generator) draws", got,
            torch.from_numpy(_pcgrad_reference(G.numpy(), 7)), atol=1e-10, rtol=1e-8)
    compare("the input gradients, which must not change", G, before, atol=0, rtol=0)


def check_trainer_step():
    from tasks.engine.devices import Precision
    from tasks.engine import Trainer
    from optim.adamw import AdamW
    events = []

    class Recorder:  # precision and callbacks that note when they are called
        def __init__(self, precision):
            self.precision = precision

        def unscale_(self, opt):
            events.append("unscale_")
            self.precision.unscale_(opt)

        def step(self, opt):
            events.append("step")
            self.precision.step(opt)

        def update(self):
            events.append("update")

        def on_before_update(self, trainer):
            events.append("on_before_update")
            events.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters()]).norm().item())
            trainer.model[0].bias.grad.zero_()  # as a gradient mask would

        def on_after_update(self, trainer):
            events.append("on_after_update")

    def setup():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
        F.mse_loss(model(_randn(8, 4)), _randn(8, 2, seed=1)).mul(100).backward()  # a gradient norm above the clip
        opt = AdamW(model.parameters(), lr=0.1)
        return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (s + 1))

    model, opt, sched = setup()
    rec = Recorder(Precision(torch.device("cpu"), False))
    trainer = SimpleNamespace(model=model, optimizers=[opt], schedulers=[sched], precision=rec, callbacks=[rec],
                              config=SimpleNamespace(max_grad_norm=0.5))
    trainer.clip_gradients = lambda: Trainer.clip_gradients(trainer)
    Trainer.optimizer_step(trainer)
    twin, twin_opt, twin_sched = setup()
    torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
    twin[0].bias.grad.zero_()
    twin_opt.step()
    twin_sched.step()
    order = [e for e in events if isinstance(e, str)]
    expect(order == ["unscale_", "on_before_update", "step", "update", "on_after_update"],
           f"the calls were {order}, expected unscale_, (clip), on_before_update, step, update, on_after_update")
    seen = next(e for e in events if isinstance(e, float))
    expect(seen <= 0.5 + 1e-9, f"on_before_update saw a gradient norm of {seen:.3g}: clip to max_grad_norm 0.5 first")
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        compare(f"parameter {name} after the step", p.detach(), q.detach(), atol=1e-12, rtol=0)
        expect(p.grad is None, f"{name}.grad is still set after the step: zero_grad(set_to_none=True)")
    expect(opt.param_groups[0]["lr"] == twin_opt.param_groups[0]["lr"],
           f"learning rate after the step is {opt.param_groups[0]['lr']}, expected {twin_opt.param_groups[0]['lr']}: "
           "step the schedule after its optimizer")


def check_mean_pool():
    from tasks.domain.model import mean_pool
    hidden = _randn(3, 5, 4).requires_grad_(True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    pooled = mean_pool(hidden, mask)
    expected = torch.stack([hidden[i, :int(m.sum())].mean(0) if m.sum() else torch.zeros(4, dtype=torch.float64)
                            for i, m in enumerate(mask)])
    compare("mean_pool (B, C) (the third row is all padding: zeros)", pooled, expected, atol=1e-12, rtol=0)
    pooled.sum().backward()
    counts = mask.sum(1, keepdim=True).clamp_min(1)[:, :, None].double()
    compare("gradient w.r.t. hidden (1/n on the real tokens, 0 on padding)", hidden.grad,
            (mask[:, :, None].double() / counts).expand(3, 5, 4), atol=1e-12, rtol=0)


def check_similarity_loss():
    from tasks.domain.losses import pearson, similarity_loss
    x, y = _randn(20, seed=1).requires_grad_(True), _randn(20, seed=2)
    r = pearson(x, y)
    compare("pearson(x, y) against numpy.corrcoef", r.reshape(()), torch.tensor(np.corrcoef(x.detach(), y)[0, 1]),
            atol=1e-10, rtol=1e-8)
    r.backward()
    xr = x.detach().clone().requires_grad_(True)
    xc, yc = xr - xr.mean(), y - y.mean()
    ((xc * yc).sum() / (xc.norm() * yc.norm())).backward()
    compare("gradient of pearson w.r.t. x", x.grad, xr.grad, atol=1e-10, rtol=1e-8)
    compare("pearson of a constant tensor (clamp, so 0, not NaN)", pearson(torch.ones(5, dtype=torch.float64), y[:5]).reshape(()),
            torch.tensor(0.0, dtype=torch.float64), atol=1e-12, rtol=0)
    pred, target = torch.rand(16, dtype=torch.float64), torch.rand(16, dtype=torch.float64)
    mse = ((pred - target) ** 2).mean()
    compare('similarity_loss(kind="mse")', similarity_loss(pred, target, "mse").reshape(()), mse, atol=1e-12, rtol=0)
    compare('similarity_loss(kind="mse+corr") = MSE + 1 − r', similarity_loss(pred, target, "mse+corr").reshape(()),
            mse + 1 - torch.tensor(np.corrcoef(pred, target)[0, 1]), atol=1e-10, rtol=1e-8)
    try:
        similarity_loss(pred, target, "huber")
    except ValueError:
        return
    expect(False, 'similarity_loss(kind="huber") returned: it must raise a ValueError naming the kind')


CHECKS: Dict[str, Callable[[], None]] = {
    "gelu": check_gelu, "layer_norm": check_layer_norm, "attention_mask": check_attention_mask, "heads": check_heads,
    "attention": check_attention, "embeddings": checks_model.check_embeddings,
    "self_attention": checks_model.check_self_attention, "layer": checks_model.check_layer,
    "key_table": checks_model.check_key_table, "adamw": check_adamw, "pcgrad": check_pcgrad,
    "trainer_step": check_trainer_step, "mean_pool": check_mean_pool,
    "paraphrase_head": checks_model.check_paraphrase_head, "similarity_loss": check_similarity_loss,
}
