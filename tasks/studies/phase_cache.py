"""The phases of an ablation grid (DAE, contrastive), trained once per seed and reused by every cell that needs them.

A phase does not depend on the fine-tuning that follows it: not on the learning rate the grid tunes, not on
--finetune_encoder full or frozen. So tasks/ablate.py trains each seed's phases once, as a phases-only run of
the classifier (which saves the encoder as a checkpoint folder), and starts every cell that needs them from that
folder with --model. A sequence reuses its prefix: 3phase's contrastive phase starts from the dae arm's encoder.

    <cache>/dae-seed11711-<hash>/encoder/               the encoder after the DAE phase (--model of the dae cells)
    <cache>/dae-contrastive-seed11711-<hash>/encoder/   after DAE, then the contrastive phase (3phase)
    <cache>/<entry>/phase.json                          what it depends on, its dev loss, its training seconds

The hash covers every flag (RunConfig.flags) the phases can depend on (all but the fine-tuning's own and the other techniques'),
so a grid with another phase setting never reads a stale encoder; phase.json is written last, atomically, so an
interrupted phase is resumed from its checkpoint instead of being read.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Dict, Sequence, Tuple

from ..engine.checkpointing import atomic_write_text
from ..launch.configs import RunConfig
from ..techniques import REGISTRY
from ..techniques.phases import PhasesConfig

# what only the fine-tuning after the phases reads (or per-run bookkeeping): left out of the key
FINETUNE_ONLY = {"lr", "head_lr", "epochs", "layer_lr_decay", "patience", "eval_every", "save_every", "out_dir",
                 "predictions_dir", "resume", "allow_changed_flags", "phases", "config", "predict_test",
                 "finetune_encoder", "task_sampling", "tasks_per_step", "head_dropout_samples", "model"}
PHASE_FLAGS = {f.name for f in dataclasses.fields(PhasesConfig)}
OTHER_TECHNIQUES = {f.name for t in REGISTRY.values() if t.Config is not PhasesConfig
                    for f in dataclasses.fields(t.Config)} - PHASE_FLAGS


def phase_key(cell: RunConfig, phases: Sequence[str], base_model: str) -> str:
    """The cache entry's name: the phases in order, the seed, and a hash of every flag they depend on."""
    flags = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(cell.flags.items())
             if k not in FINETUNE_ONLY and k not in OTHER_TECHNIQUES}
    digest = hashlib.sha1(json.dumps({"model": base_model, "phases": list(phases), "flags": flags},
                                     sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{'-'.join(phases)}-seed{cell.train.seed}-{digest}"


def cached_phases(cell: RunConfig, phases: Sequence[str], cache_dir: Path,
                  train: Callable[[RunConfig], Dict[str, float]]) -> Tuple[str, float]:
    """The encoder after `phases` for this cell's seed and data: (folder for --model, the seconds its phases took
    to train; their dev losses are in each entry's phase.json). Each prefix is trained with `train` (a
    phases-only run) the first time only."""
    model, seconds = cell.model.model, 0.0
    for i in range(len(phases)):
        entry = Path(cache_dir) / phase_key(cell, phases[:i + 1], cell.model.model)
        done = entry / "phase.json"
        if not done.is_file():
            run = cell.with_flags(model=model, phases=(phases[i],), out_dir=str(entry),
                                  predictions_dir=str(entry / "predictions"), resume=True)
            t0 = time.time()
            scores = train(run)
            record = {"phases": list(phases[:i + 1]), "from": model, "seconds": round(time.time() - t0, 3),
                      "dev_losses": scores, "flags": {k: v for k, v in cell.flags.items() if k in PHASE_FLAGS}}
            for path in entry.rglob("*.safetensors"):  # the phase's checkpoints; the encoder/ folder stays
                if path.parent.name != "encoder":
                    path.unlink()
            atomic_write_text(done, json.dumps(record, indent=1, default=str) + "\n")
        record = json.loads(done.read_text(encoding="utf-8"))
        model, seconds = str(entry / "encoder"), seconds + record["seconds"]
    return model, seconds
