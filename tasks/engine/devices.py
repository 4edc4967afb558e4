"""Where training runs and in what precision: the device, autocast with its gradient scaler, torch.compile."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
from typing import Optional

import torch

log = logging.getLogger(__name__)  # a plain `warning: ...` line on the CLIs' stderr (tasks/launch/cli.py)


def to_device(batch: dict, device) -> dict:
    """A batch's tensors on the device (its other values as they are)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def pick_device(use_gpu: bool) -> torch.device:
    """--use_gpu: CUDA, else Apple's MPS, else the CPU with a warning."""
    if use_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if use_gpu and mps is not None and mps.is_available():
        return torch.device("mps")
    if use_gpu:
        log.warning("--use_gpu was given but neither CUDA nor MPS is available: training on the CPU")
    return torch.device("cpu")


def autocast_dtype(device: torch.device, mixed_precision: bool) -> Optional[torch.dtype]:
    """bf16 on a CUDA GPU that supports it, fp16 on an older one (T4, V100: with a gradient scaler), else None."""
    if not mixed_precision or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class Precision:
    """autocast() around forward passes, and for fp16 the GradScaler's scale / unscale / step around the update."""

    def __init__(self, device: torch.device, mixed_precision: bool):
        self.device, self.dtype = device, autocast_dtype(device, mixed_precision)
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def unscale_(self, optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)  # skipped when the unscaled gradients hold inf/NaN
        else:
            optimizer.step()

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()


def compile_layers(model: torch.nn.Module, backend: str = "inductor") -> bool:
    """torch.compile each encoder layer in place (regional compilation: the repeated block is compiled once
    and reused, whatever method of the model the processors call). Returns False, with a warning, where
    torch.compile is unavailable; errors at the first compiled call fall back to eager too."""
    from minibert.model import Layer
    layers = [m for m in model.modules() if isinstance(m, Layer)]
    try:
        if not layers:
            raise RuntimeError("the model has no minibert encoder layers to compile")
        if not hasattr(torch, "compile") or not hasattr(torch.nn.Module, "compile"):
            raise RuntimeError(f"torch {torch.__version__} has no torch.compile / nn.Module.compile")
        if backend == "inductor" and next(model.parameters()).device.type == "cpu" \
                and shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("c++") is None:
            raise RuntimeError("torch.compile on the CPU needs a C++ compiler (g++ / c++) on the PATH")
        import torch._dynamo as dynamo
        dynamo.config.suppress_errors = True  # a failure when a graph is compiled: run that code eagerly
        for layer in layers:
            layer.compile(backend=backend)
        return True
    except Exception as err:  # noqa: BLE001  (whatever the reason, say it and train uncompiled)
        log.warning(f"--compile: torch.compile is unavailable here ({err}); training without it")
        return False
