"""The frozen-encoder GAN: embed every sentence once, then train D and G (EmbeddingGan) on the vectors.

With the encoder frozen its embeddings never change, so they are computed once (eval mode: no dropout) and
cached to a file; a step is then two small MLPs, thousands of steps a minute on one CPU thread. The
fine-tuned-encoder GAN (gan/train.py) stays the paper's full method; this mode is for studies that need
many seeds and long runs.

Batches: each step holds `labeled_per_batch` labelled rows and, for a GAN with unlabelled data,
`unlabeled_per_batch` unlabelled rows, each drawn from its own stream of shuffled passes seeded by the run's
seed. At a fixed number of steps every cell of a study therefore sees the same labelled rows in the same
order, whatever the method and the amount of unlabelled data: no replication factor, and no epoch length
that grows with the unlabelled pool.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from tasks.engine.checkpointing import load_state, save_state, write_jsonl
from tasks.domain.data import SentenceCollator, get_task, subsample
from tasks.engine.devices import to_device
from tasks.engine import TrainConfig

from .data import IGNORE, labeled_split, unlabeled_subset
from .model import EmbeddingGan, GanConfig
from .probe import FakeReference, fake_probe
from .trainer import GanTrainer


@torch.no_grad()
def embed_examples(encoder, examples, tokenizer, max_length: int = 128, device="cpu", batch_size: int = 64) -> torch.Tensor:
    """Pooled sentence embeddings (N, C) from a MultitaskBert-like `encoder.embed`, in eval mode, in input order.
    Sentences go in batches of similar length (less padding); the order is restored afterwards."""
    collate, out = SentenceCollator(tokenizer, max_length), [None] * len(examples)
    was_training = encoder.training
    encoder.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].sentence))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = to_device(collate([examples[i] for i in idx]), device)
        vectors = encoder.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")).float().cpu()
        for i, v in zip(idx, vectors):
            out[i] = v
    encoder.train(was_training)
    return torch.stack(out)


def cached_embeddings(path, task: str, files: Dict[str, str], model_name: Optional[str] = None, pooling: str = "mean",
                      max_length: int = 128, max_examples: Optional[int] = None, device="cpu") -> Dict[str, torch.Tensor]:
    """{"train", "train_labels", "dev", "dev_labels"} of a frozen encoder, read from `path` if it holds the
    same setting, else computed and written there."""
    key = {"task": task, "model": model_name, "pooling": pooling, "max_length": max_length,
           "max_examples": max_examples, **{s: str(Path(files[s]).resolve()) for s in ("train", "dev")}}
    path = Path(path)
    if path.is_file():
        data = load_state(path)  # safetensors + JSON: no pickle
        if data.get("key") == key:
            return data
    from minibert import BertModel, Tokenizer  # only when the cache misses
    from tasks.domain.model import MultitaskBert
    tokenizer = Tokenizer.from_pretrained(model_name)
    encoder = MultitaskBert(BertModel.from_pretrained(model_name), tasks=(), pooling=pooling).to(device)
    data = {"key": key}
    load = get_task(task).loader
    for split in ("train", "dev"):
        rows = subsample(load(Path(files[split])), max_examples)
        data[split] = embed_examples(encoder, rows, tokenizer, max_length, device)
        data[f"{split}_labels"] = torch.tensor([e.label for e in rows])
    save_state(path, data)
    return data


class Stream:
    """An endless sequence of indices: shuffled passes over `indices`, from its own seeded generator."""

    def __init__(self, indices: torch.Tensor, seed: int):
        self.indices, self.rng, self.queue = indices, torch.Generator().manual_seed(seed), indices[:0]

    def take(self, n: int) -> torch.Tensor:
        while len(self.queue) < n:
            self.queue = torch.cat([self.queue, self.indices[torch.randperm(len(self.indices), generator=self.rng)]])
        out, self.queue = self.queue[:n], self.queue[n:]
        return out


@dataclass(frozen=True)
class FrozenConfig:
    steps: int = 3000  # the budget: the same for every method and amount of unlabelled data
    labeled_per_batch: int = 32
    unlabeled_per_batch: int = 32
    lr: float = 1e-3  # D's (a fresh MLP on fixed vectors, not a pretrained encoder)
    weight_decay: float = 0.01
    schedule: str = "linear"  # D's: decays to 0, so the final step is a settled model (no pick on dev); G's is GanConfig.g_schedule
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    eval_every: int = 250


class FrozenBatches:
    """`steps` batches of cached embeddings, as a processor for the shared loop: each holds labelled rows from
    one stream and, for a GAN with unlabelled rows, unlabelled rows from another (the labelled part depends on
    the seed only, whatever the method and the unlabelled pool)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, labeled: torch.Tensor, unlabeled: torch.Tensor,
                 cfg: FrozenConfig, seed: int, use_unlabeled: bool):
        self.x, self.y, self.labeled, self.unlabeled, self.cfg, self.seed = x, y, labeled, unlabeled, cfg, seed
        self.use_unlabeled = use_unlabeled and len(unlabeled) > 0

    def num_batches(self) -> int:
        return self.cfg.steps

    def batches(self, epoch: int):
        lab, unl = Stream(self.labeled, 2 * self.seed + 1), Stream(self.unlabeled, 2 * self.seed + 2)
        for _ in range(self.cfg.steps):
            idx_l = lab.take(self.cfg.labeled_per_batch)
            idx_u = unl.take(self.cfg.unlabeled_per_batch) if self.use_unlabeled else idx_l[:0]
            labels = torch.cat([self.y[idx_l], torch.full((len(idx_u),), IGNORE, dtype=torch.long)])
            yield {"embeddings": self.x[torch.cat([idx_l, idx_u])], "labels": labels, "label_mask": labels != IGNORE}


def train_frozen(model: EmbeddingGan, x: torch.Tensor, y: torch.Tensor, labeled: torch.Tensor, unlabeled: torch.Tensor,
                 cfg: FrozenConfig, seed: int, evaluate: Optional[Callable[[EmbeddingGan], dict]] = None,
                 out_dir=None) -> List[dict]:
    """cfg.steps two-player steps of the shared loop (GanTrainer: one epoch of cfg.steps batches, evaluated every
    cfg.eval_every steps) on rows `labeled` (labels y) and `unlabeled` of x (N, C). Returns one record per
    evaluation: the mean loss terms since the last, and what `evaluate(model)` returns."""
    def scored(m):
        out = evaluate(m) if evaluate is not None else {}
        return {"score": float(out.get("dev_accuracy", 0.0)), **out}

    batches = FrozenBatches(x, y, labeled, unlabeled, cfg, seed, model.generator is not None)
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(epochs=1, lr=cfg.lr, weight_decay=cfg.weight_decay, schedule=cfg.schedule,
                             warmup_ratio=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm, seed=seed,
                             eval_every=cfg.eval_every, mixed_precision=False, out_dir=str(out_dir or tmp))
        trainer = GanTrainer(model, {"gan": batches}, config, scored, show_progress=False)
        trainer.fit()
    return [{"step": h["step"], "train_loss": h["train_loss"], **{k: v for k, v in h["dev"].items() if k != "score"}}
            for h in trainer.progress.history]


def accuracy(model: EmbeddingGan, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model.sentiment_logits({"embeddings": x}).argmax(-1) == y).double().mean())


def run_cell(data: Dict[str, torch.Tensor], num_labels: int, gan: GanConfig, cfg: FrozenConfig,
             labeled_fraction: float, unlabeled_fraction: float, seed: int, reference: Optional[FakeReference] = None,
             out_dir=None) -> dict:
    """One run of the study: split, train, and the final dev accuracy with the probe and diversity numbers.
    With out_dir, writes metrics.jsonl there (a record per evaluation, then the result)."""
    started = time.time()
    x, y = data["train"], data["train_labels"]
    lab_idx, pool = labeled_split(y.tolist(), labeled_fraction, seed)
    unl_idx = unlabeled_subset(pool, unlabeled_fraction, seed)
    torch.manual_seed(seed)  # D is built first: the same initial D for every method
    model = EmbeddingGan(x.size(1), num_labels, gan)

    def evaluate(m):
        out = {"dev_accuracy": accuracy(m, data["dev"], data["dev_labels"])}
        if reference is not None and m.generator is not None:
            out["fakes"] = fake_probe(m, x, y, seed=seed, reference=reference)
        return out

    history = train_frozen(model, x, y, torch.tensor(lab_idx), torch.tensor(unl_idx), cfg, seed, evaluate, out_dir)
    last = history[-1]
    result = {"dev_accuracy": last["dev_accuracy"], **last.get("fakes", {}), "labeled": len(lab_idx),
              "unlabeled": len(unl_idx) if gan.method != "plain" else 0, "steps": cfg.steps,
              "wall_seconds": round(time.time() - started, 1)}
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        write_jsonl(Path(out_dir) / "metrics.jsonl",
                    history + [{"final": True, **result, "gan": asdict(gan), "frozen": asdict(cfg)}])
    return result
