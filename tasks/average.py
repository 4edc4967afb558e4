"""Average the weights of several saved models into one (a "model soup", Wortsman et al. 2022).

    python tasks/average.py --models runs/seed1/model runs/seed2/model runs/seed3/model --out runs/soup/model
    python tasks/evaluate.py --model runs/soup/model

Models fine-tuned from one checkpoint often lie in one basin of the loss, where the mean of their weights
scores like an ensemble at the cost of one model. Every member must have the same architecture, heads and
vocabulary (read and written with tasks/domain/saved_model.py's folder format); the result is a model folder like
the members'. Floating-point tensors are averaged (uniformly, or by --weights); any other tensor must be
equal in every member and is kept.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable, not this folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from minibert.hub import resolve_model_dir  # noqa: E402
from tasks.launch.inference import load_or_exit  # noqa: E402
from tasks.domain.model import MultitaskBert  # noqa: E402
from tasks.domain.saved_model import save_model_folder  # noqa: E402


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]],
                        weights: Optional[Sequence[float]] = None) -> Dict[str, torch.Tensor]:
    """Σ_m w_m · θ_m per floating-point tensor (w uniform by default, normalised to sum to 1), in the
    tensors' dtype; other tensors must agree across the members."""
    if not states:
        raise ValueError("nothing to average: no models given")
    w = torch.tensor([1.0] * len(states) if weights is None else list(weights), dtype=torch.float64)
    if len(w) != len(states) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need one non-negative weight per model, not all zero; got {list(w.tolist())}")
    w = w / w.sum()
    keys = list(states[0])
    for i, s in enumerate(states[1:], 2):
        if list(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise ValueError(f"model {i} does not have model 1's parameters and shapes: not the same architecture")
    out = {}
    for k in keys:
        first = states[0][k]
        if first.is_floating_point():
            mean = sum(wi * s[k].double() for wi, s in zip(w.tolist(), states))
            out[k] = mean.to(first.dtype)
        elif all(torch.equal(s[k], first) for s in states):
            out[k] = first.clone()
        else:
            raise ValueError(f"{k}: a non-float tensor that differs between the models cannot be averaged")
    return out


def average_models(folders: Sequence[str], weights: Optional[Sequence[float]] = None,
                   prog: str = "average.py") -> MultitaskBert:
    """The members loaded, checked against the first (config, heads, vocabulary), and averaged into the first."""
    first = load_or_exit(folders[0], prog)
    reference = _architecture(first, folders[0])
    states = [first.state_dict()]
    for folder in folders[1:]:
        model = load_or_exit(folder, prog)
        if _architecture(model, folder) != reference:
            sys.exit(f"{prog}: {folder} differs from {folders[0]} in its config, heads or vocabulary: "
                     "only models of one architecture can be averaged")
        states.append(model.state_dict())
    first.load_state_dict(average_state_dicts(states, weights))
    return first


def _architecture(model: MultitaskBert, folder) -> tuple:
    """What members must share: the encoder's config and the heads but their dropout rates, and the vocabulary."""
    path = resolve_model_dir(folder) / "vocab.txt"
    no_dropout = lambda d: {k: v for k, v in d.items() if "dropout" not in k}  # noqa: E731
    return (no_dropout(model.bert.config.to_dict()), no_dropout(model.head_config()),
            path.read_text(encoding="utf-8") if path.is_file() else "")


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="saved model folders (tasks/domain/saved_model.py)")
    parser.add_argument("--weights", nargs="+", type=float, default=None, help="one per model (default: equal)")
    parser.add_argument("--out", required=True, help="the averaged model's folder")
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("--models needs two or more folders")
    model = average_models(args.models, args.weights)
    command = "python tasks/average.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    folder = save_model_folder(model, model.tokenizer, args.out, card=dict(
        base_checkpoint=f"the weight average of {len(args.models)} models: {', '.join(args.models)}", command=command))
    print(f"averaged {len(args.models)} models into {folder} (score it: python tasks/evaluate.py --model {folder})")
    return folder


if __name__ == "__main__":
    main()
