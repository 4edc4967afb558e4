"""Which learning rate and weight decay each parameter gets, and two per-layer levers of fine-tuning.

The model declares its shared encoder (`model.encoder_parameters()`): the encoder trains at --lr, everything
else (the task heads) at --head_lr, and biases and LayerNorms without weight decay.

Layer-wise learning-rate decay (LLRD; ELECTRA, Clark et al. 2020): the layers near the input hold the most
general features, so they move least. The convention is BEiT's and MAE's `param_groups_lrd` (ELECTRA's
`_get_layer_lrs` without its unused depth): with L encoder layers numbered 0 (bottom) to L − 1 (top),

    layer i           lr · decay^(L − i)        (the top layer: lr · decay)
    embeddings        lr · decay^(L + 1)
    everything else   lr                        (the pooler, which sits above the top layer)

and the task heads keep their own rate (--head_lr, else lr). decay = 1 gives every encoder parameter lr.

Re-initialising the top k layers (Zhang et al. 2021, "Revisiting few-sample BERT fine-tuning"): the top
layers of a pre-trained encoder are specialised to its pre-training objective; drawing them afresh, with
BERT's initialisation, can help a small fine-tuning set.
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional

import torch
import torch.nn as nn

from optim import is_no_decay

LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
EMBEDDINGS = re.compile(r"(?:^|\.)embeddings\.")


def layer_lr_scales(names: Iterable[str], decay: float) -> Dict[str, float]:
    """Each encoder parameter's multiplier of lr, from its name (`bert.layers.{i}.`, `bert.embeddings.`)."""
    names = list(names)
    depth = {n: int(m.group(1)) for n in names for m in [LAYER.search(n)] if m}
    if not depth:
        raise ValueError("layer-wise lr decay found no encoder layer ('layers.<i>.') among the parameter names")
    L = max(depth.values()) + 1
    return {n: decay ** (L - depth[n]) if n in depth else decay ** (L + 1) if EMBEDDINGS.search(n) else 1.0
            for n in names}


def reinit_top_layers(encoder: nn.Module, k: int) -> None:
    """Draw the top k of `encoder.layers` afresh with the encoder's own initialisation (BERT's: N(0, 0.02)
    weights, zero biases, unit LayerNorms); the embeddings, the lower layers and the pooler keep their weights."""
    layers = encoder.layers
    if not 0 <= k <= len(layers):
        raise ValueError(f"reinit_layers must be in [0, {len(layers)}] for this {len(layers)}-layer encoder, got {k}")
    for layer in list(layers)[len(layers) - k:]:
        layer.apply(encoder._init_weights)


def encoder_parameters(model: torch.nn.Module) -> List[torch.nn.Parameter]:
    """The parameters the model declares as its shared encoder (`model.encoder_parameters()`); a model that
    declares none is all encoder."""
    declared = getattr(model, "encoder_parameters", None)
    return list(declared()) if declared is not None else list(model.parameters())


def param_groups(model: torch.nn.Module, lr: float, head_lr: Optional[float], weight_decay: float,
                 layer_lr_decay: float = 1.0) -> List[dict]:
    """The encoder at lr, everything else (heads) at head_lr; no decay for biases and LayerNorms.
    `layer_lr_decay` < 1 scales each encoder parameter's lr by its depth (`layer_lr_scales` above)."""
    encoder = {id(p) for p in encoder_parameters(model)}
    scales = {} if layer_lr_decay == 1.0 else layer_lr_scales(
        [n for n, p in model.named_parameters() if id(p) in encoder], layer_lr_decay)
    groups: Dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        rate = lr if id(p) in encoder or head_lr is None else head_lr
        if name in scales:
            rate = lr * scales[name]
        decay = 0.0 if is_no_decay(name, p) else weight_decay
        groups.setdefault((rate, decay), {"params": [], "lr": rate, "weight_decay": decay})["params"].append(p)
    return list(groups.values())
