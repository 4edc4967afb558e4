"""The training loop in 2 processes (DistributedDataParallel over gloo) equals 1 process on the combined batch.

Each task has 4 fixed batches of 4 examples. Two ranks take batches (0, 2) and (1, 3); one process gets the
same examples as 2 batches of 8: (0 + 1), (2 + 3). With dropout off, the mean losses make the averaged
gradient of the ranks the gradient of the combined batch, so after the same steps the parameters agree to
float rounding. Run for the plain summed step and for PCGrad (task gradients averaged, then projected), with
two tasks per step of three, so that every step leaves one head without a gradient. The GAN's two-player step
too. One start of two processes trains all three, forked from the test process where that is safe (tests/_forked.py:
a fresh interpreter costs seconds of imports); the tests compare its results with one process each.
"""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _forked import start_method
from minibert import BertModel, tiny_config
from tasks.domain.model import MultitaskBert
from tasks.domain.processors import PROCESSORS
from tasks.techniques.pcgrad import PCGradConfig, PCGradTechnique
from tasks.engine import TrainConfig, Trainer

B, T, BATCHES = 4, 10, 4


def _batches(task: str):
    """Fixed collated batches for a task (pairs are Siamese for sts, joined for para), with padding."""
    g = torch.Generator().manual_seed({"sst": 1, "para": 2, "sts": 3}[task])
    out = []
    for _ in range(BATCHES):
        def ids_and_mask():
            ids = torch.randint(5, 99, (B, T), generator=g)
            lengths = torch.randint(4, T + 1, (B,), generator=g)
            mask = (torch.arange(T)[None] < lengths[:, None]).long()
            return ids * mask, mask
        if task == "sts":
            (a, ma), (b, mb) = ids_and_mask(), ids_and_mask()
            batch = {"input_ids_1": a, "attention_mask_1": ma, "input_ids_2": b, "attention_mask_2": mb,
                     "labels": torch.rand(B, generator=g) * 5}
        else:
            ids, mask = ids_and_mask()
            labels = torch.randint(0, 5 if task == "sst" else 2, (B,), generator=g)
            batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
                     "labels": labels if task == "sst" else labels.float()}
        out.append(batch)
    return out


def _combined(batches):
    return [{k: torch.cat([a[k], b[k]]) for k in a} for a, b in zip(batches[0::2], batches[1::2])]


def _processors(combined: bool):
    procs = {}
    for task in ("sst", "para", "sts"):
        data = _combined(_batches(task)) if combined else _batches(task)

        class Fixed(PROCESSORS[task]):
            def num_batches(self, _data=data):
                return len(_data)

            def batches(self, epoch, _data=data):
                return iter(_data)

        procs[task] = Fixed(task, tokenizer=None, **({"form": "cross"} if task == "para" else {}))
    return procs


def _model():
    torch.manual_seed(0)
    encoder = BertModel(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    return MultitaskBert(encoder, ("sst", "para", "sts"), para_head="cross", dropout=0.0)


def _config(out_dir, pcgrad):
    # two tasks per step of three: each step leaves one head without a gradient
    return TrainConfig(epochs=2, lr=1e-3, warmup_ratio=0.0, schedule="linear", task_sampling="round_robin",
                       tasks_per_step=2, out_dir=str(out_dir), seed=3)


def _train(combined: bool, out_dir, pcgrad: bool):
    model = _model()
    callbacks = [PCGradTechnique().callback(PCGradConfig(pcgrad), model, seed=3)]
    trainer = Trainer(model, _processors(combined), _config(out_dir, pcgrad), lambda m: {"score": 0.0}, callbacks,
                      show_progress=False)
    trainer.fit()
    return model, trainer


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the GAN's two-player step under DDP: it averages its gradients itself (autograd.grad bypasses DDP's hooks) --

def _gan_train(combined: bool, out_dir):
    from gan.model import EmbeddingGan, GanConfig
    from gan.trainer import GanTrainer
    g = torch.Generator().manual_seed(7)
    batches = [{"embeddings": torch.randn(B, 8, generator=g), "labels": torch.randint(0, 3, (B,), generator=g),
                "label_mask": torch.ones(B, dtype=torch.bool)} for _ in range(BATCHES)]
    data = _combined(batches) if combined else batches

    class Fixed:
        def num_batches(self):
            return len(data)

        def batches(self, epoch):
            return iter(data)

    torch.manual_seed(0)
    model = EmbeddingGan(8, 3, GanConfig(method="plain", gan_dropout=0.0, d_hidden=16))  # D alone: no noise drawn
    cfg = TrainConfig(epochs=2, lr=1e-2, warmup_ratio=0.0, schedule="linear", out_dir=str(out_dir), seed=3)
    GanTrainer(model, {"toy": Fixed()}, cfg, lambda m: {"score": 0.0}, show_progress=False).fit()
    return model


RUNS = {"summed": False, "pcgrad": True}  # the multitask runs: name -> PCGrad on


def _worker(rank, world_size, port, out_dir):
    """Each run of this module in one of two processes; its weights to <out_dir>/<run>/rank<r>.pt."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        for name, pcgrad in RUNS.items():
            model, trainer = _train(False, os.path.join(out_dir, name), pcgrad)
            assert trainer.steps_per_epoch == 3 and trainer.accelerator.ddp is not None
            torch.save(model.state_dict(), os.path.join(out_dir, name, f"rank{rank}.pt"))
        os.makedirs(os.path.join(out_dir, "gan"), exist_ok=True)
        torch.save(_gan_train(False, os.path.join(out_dir, "gan")).state_dict(),
                   os.path.join(out_dir, "gan", f"rank{rank}.pt"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """The folder of the two-process runs: one subfolder per run."""
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True, start_method=start_method())
    return out


@pytest.mark.parametrize("run", RUNS)
def test_two_gloo_processes_equal_one_process_on_the_combined_batch(ddp, tmp_path, run):
    single, trainer = _train(True, tmp_path / "single", RUNS[run])
    assert trainer.steps_per_epoch == 3
    ranks = [torch.load(ddp / run / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    start = _model().state_dict()
    for name, expected in single.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name}: the ranks disagree"
        assert not torch.equal(expected, start[name]) or "pooler" in name, f"{name} did not move"  # (mean pooling)
        diff = (ranks[0][name] - expected).abs().max().item()
        assert diff <= 1e-5, f"{name}: 2 processes vs 1 differ by {diff:.2e}"
    # rank 0 alone wrote the run's files: one metrics line per epoch
    lines = (ddp / run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and (ddp / run / "best.safetensors").is_file() and (ddp / run / "last.safetensors").is_file()


def test_gan_trainer_in_two_gloo_processes_equals_one_process(ddp, tmp_path):
    single = _gan_train(True, tmp_path / "single").state_dict()
    ranks = [torch.load(ddp / "gan" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, expected in single.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name}: the ranks disagree"
        assert (ranks[0][name] - expected).abs().max().item() <= 1e-5, name
