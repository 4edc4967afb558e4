"""minibert against transformers.BertModel, side by side in one process: throughput, peak memory, padding.

    python benchmarks/bench_bert.py                   # CPU fp32 (and CUDA fp32 + bf16 autocast when present):
                                                      # MiniLM and a BERT-base-shaped random model, batch 32,
                                                      # lengths 64 and 128, inference and training
    python benchmarks/bench_bert.py --models minilm --what train --lengths 128 --repeats 9
    python benchmarks/bench_bert.py --mode epoch      # one epoch of SST train through the training loop's data
                                                      # path: length-bucketed vs random batches

Speed mode. Both libraries hold the same weights (`minilm`: the embedded all-MiniLM-L6-v2 folder, loaded by
each; `base`: HF's random BERT-base-shaped init, copied into minibert through checkpoint.hf_to_minibert; `tiny`:
a small random one for smoke tests) and get the same inputs: random token ids, every position real unless
`--padding ragged` (row lengths uniform in [T/2, T]). transformers runs with attn_implementation="sdpa"
(`--hf_attn`). Each row: --warmup runs of each side, then --repeats timed runs that alternate (minibert first,
then transformers first, ...) so that drift of the machine falls on both; the row reports medians.
- infer: eval mode, forward under torch.inference_mode.
- train: train mode (dropout as configured), forward, loss = mean(h²) + mean(pooler²), backward, optimizer step,
  zero_grad. Both sides step with the same optimizer, torch.optim.AdamW(fused=True) — transformers.Trainer's
  default ("adamw_torch_fused") — so the ratio is the models'.
- train_own_optim: the same, but minibert's side steps with minibert's own AdamW (optim.AdamW, the one
  tasks/engine/trainer.py uses) against transformers with torch's fused AdamW: what a user of each stack gets.
Page faults / run: the process's minor page faults during each side's timed runs, per run (minibert / transformers),
from getrusage: pages touched for the first time since the allocator returned them to the OS. They are a real
share of a CPU step (a fault costs about a microsecond), and they explained most of the gap between minibert and
transformers, which compute the same thing with the same kernels.
Peak memory: one more, untimed run per side. CUDA: max_memory_allocated above what was allocated before it.
CPU: the peak of the bytes of live tensors created during the run (a TorchDispatchMode that follows every
storage until it is freed): activations, gradients and temporaries, above the resident weights and optimizer
state; buffers that kernels allocate internally are not seen. Ratios are minibert / transformers: throughput
above 1 means minibert is faster, memory below 1 means it needs less.

Epoch mode. One epoch of the SST training file as tasks/engine/trainer.py runs it (processor batches, collator,
to_device, the sentiment loss on MultitaskBert, our AdamW, clipping, the schedule), once with the
LengthBucketSampler that every processor uses and once with plain shuffled batches, the two runs' steps
taken in turn; reports real tokens vs padded slots, the data path's own time (tokenise + collate, no model)
and the training time (forward, backward, clipping and optimizer step of every batch).

bf16 on a CPU without native bf16 (AVX2) is extremely slow and says nothing about minibert; it is only run on
CUDA unless --cpu_dtypes asks for it.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List

import torch

try:
    import resource  # page-fault counts; not on Windows
except ImportError:
    resource = None

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from minibert import BertConfig, BertModel, embedded_model_dir  # noqa: E402
from minibert.checkpoint import hf_to_minibert  # noqa: E402

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
WHAT = ("infer", "train", "train_own_optim")
TINY = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


# ---- machine and models ------------------------------------------------------------------------------------

def machine_info() -> Dict[str, str]:
    import transformers
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
            "platform": platform.platform(), "cpu": cpu, "logical cores": str(os.cpu_count()),
            "torch threads": str(torch.get_num_threads()), "torch": torch.__version__,
            "transformers": transformers.__version__}
    try:
        info["load average (1, 5, 15 min)"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    if torch.cuda.is_available():
        info["cuda"] = f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return info


def build_pair(name: str, hf_attn: str = "sdpa", ours_attn: str = "sdpa", checkpointing: bool = False):
    """(minibert BertModel, transformers.BertModel) with the same weights, both in eval mode, on the CPU."""
    import transformers
    if name == "minilm":
        folder = embedded_model_dir()
        ours = BertModel.from_pretrained(folder, attn_implementation=ours_attn, gradient_checkpointing=checkpointing)
        theirs = transformers.BertModel.from_pretrained(folder, attn_implementation=hf_attn)
    else:
        values = {"base": {}, "tiny": TINY}[name]  # transformers.BertConfig() is BERT-base: 12 × 768, 12 heads
        torch.manual_seed(0)
        hf_config = transformers.BertConfig(**values)
        hf_config._attn_implementation = hf_attn
        theirs = transformers.BertModel(hf_config)
        ours = BertModel(BertConfig.from_dict(hf_config.to_dict(), attn_implementation=ours_attn,
                                              gradient_checkpointing=checkpointing))
        state, unexpected = hf_to_minibert(theirs.state_dict())
        assert all("token_type_ids" in k or "position_ids" in k for k in unexpected), unexpected  # buffers only
        ours.load_state_dict(state)
    if checkpointing:
        theirs.gradient_checkpointing_enable()
    return ours.eval(), theirs.eval()


def make_inputs(vocab_size: int, B: int, T: int, padding: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(999 if vocab_size > 2000 else 5, vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    if padding == "ragged":
        lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
        lengths[0] = T
        mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
        ids[mask == 0] = 0
    return ids, mask, torch.zeros_like(ids)


# ---- peak memory ---------------------------------------------------------------------------------------------

class LiveTensorBytes:
    """Peak bytes of the tensors created inside the `with` block that are alive at once (CPU or any device).

    Every op's output storage is counted when it first appears and uncounted when it is freed (a weakref
    callback on the storage), so views and in-place results are counted once.
    """

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten
        tracker = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        tracker._see(t)
                return out

        self.mode, self.live, self.current, self.peak = Mode(), {}, 0, 0

    def _see(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self.live:
            return
        self.live[key] = size
        self.current += size
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def peak_bytes(run: Callable[[], None], device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with LiveTensorBytes() as tracker:
        run()
    return tracker.peak


# ---- one side of one row -------------------------------------------------------------------------------------

def make_step(model, is_hf: bool, what: str, inputs, device, dtype, optimizer) -> Callable[[], None]:
    ids, mask, types = inputs

    def forward():
        if is_hf:
            return model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        return model(ids, mask, types)

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    if what == "infer":
        def step():
            with torch.inference_mode(), autocast():
                forward()
    else:
        def step():
            with autocast():
                out = forward()
                loss = out.last_hidden_state.float().square().mean() + out.pooler_output.float().square().mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return step


def timed(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def minor_faults() -> float:
    """Minor page faults of this process so far: each is a fresh page of memory touched for the first time. On the
    CPU the allocator hands large tensors back to the OS and faults them in again, which costs real time."""
    if resource is None:
        return float("nan")
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@dataclass
class Row:
    model: str
    device: str
    dtype: str
    batch: int
    length: int
    padding: str
    what: str
    ours_ms: float = 0.0
    theirs_ms: float = 0.0
    ours_sps: float = 0.0  # sentences per second
    theirs_sps: float = 0.0
    ratio: float = 0.0  # throughput, minibert / transformers
    ours_peak_mib: float = 0.0
    theirs_peak_mib: float = 0.0
    mem_ratio: float = 0.0
    ours_faults: float = 0.0  # minor page faults per timed run
    theirs_faults: float = 0.0
    ours_times: List[float] = field(default_factory=list)
    theirs_times: List[float] = field(default_factory=list)


def measure_row(pair, name, device, dtype_name, B, T, what, args) -> Row:
    ours, theirs = pair
    dtype = DTYPES[dtype_name]
    inputs = tuple(t.to(device) for t in make_inputs(ours.config.vocab_size, B, T, args.padding, args.seed))
    steps = {}
    for side, model in (("ours", ours), ("theirs", theirs)):
        model.train(what != "infer")
        optimizer = None
        if what != "infer":
            params = [p for p in model.parameters() if p.requires_grad]
            if side == "ours" and what == "train_own_optim":
                from optim import AdamW
                optimizer = AdamW(params, lr=1e-5, weight_decay=0.01)
            else:
                optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01, fused=True)
        run_model = model
        if side == "ours" and args.compiled is not None:
            run_model = args.compiled
        steps[side] = make_step(run_model, side == "theirs", what, inputs, device, dtype, optimizer)
    row = Row(name, device.type, dtype_name, B, T, args.padding, what)
    for _ in range(args.warmup):
        for side in ("ours", "theirs"):
            steps[side]()
    for i in range(args.repeats):
        for side in (("ours", "theirs") if i % 2 == 0 else ("theirs", "ours")):
            faults = minor_faults()
            getattr(row, f"{side}_times").append(timed(steps[side], device))
            setattr(row, f"{side}_faults", getattr(row, f"{side}_faults") + (minor_faults() - faults) / args.repeats)
    for side in ("ours", "theirs"):
        median = statistics.median(getattr(row, f"{side}_times"))
        setattr(row, f"{side}_ms", 1000 * median)
        setattr(row, f"{side}_sps", B / median)
        if not args.no_memory:
            setattr(row, f"{side}_peak_mib", peak_bytes(steps[side], device) / 2 ** 20)
    row.ratio = row.ours_sps / row.theirs_sps
    row.mem_ratio = row.ours_peak_mib / row.theirs_peak_mib if row.theirs_peak_mib else float("nan")
    for model in pair:
        model.eval()
        model.zero_grad(set_to_none=True)
    return row


def check_same_function(pair, device) -> float:
    """Largest |difference| of the last hidden state on a padded batch: the two sides compute the same thing."""
    ours, theirs = pair
    ids, mask, types = (t.to(device) for t in make_inputs(ours.config.vocab_size, 4, 16, "ragged", 1))
    with torch.inference_mode():
        a = ours(ids, mask, types).last_hidden_state
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    real = mask.bool()
    return (a - b)[real].abs().max().item()


def maybe_compile(model, enabled: bool):
    """minibert as `--compile` trains it: each encoder layer compiled in place (tasks.engine.trainer.compile_layers), the
    embeddings, the mask and the pooler eager, so the no-padding check still drops the mask."""
    if not enabled:
        return None
    from tasks.engine.devices import compile_layers
    if compile_layers(model):  # warns and returns False where torch.compile is unavailable
        return model
    print("--compile: torch.compile is unavailable here; timing eager minibert")
    return None


# ---- tables --------------------------------------------------------------------------------------------------

def format_rows(rows: List[Row], memory: bool) -> str:
    head = ["model", "device", "dtype", "B", "T", "pad", "what", "minibert sent/s", "transformers sent/s",
            "ratio", "page faults / run"]
    if memory:
        head += ["minibert peak MiB", "transformers peak MiB", "mem ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.model, r.device, r.dtype, str(r.batch), str(r.length), r.padding, r.what, f"{r.ours_sps:.1f}",
                 f"{r.theirs_sps:.1f}", f"**{r.ratio:.3f}**", f"{r.ours_faults:.0f} / {r.theirs_faults:.0f}"]
        if memory:
            cells += [f"{r.ours_peak_mib:.0f}", f"{r.theirs_peak_mib:.0f}", f"{r.mem_ratio:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_header(args) -> None:
    print("command: python " + " ".join([os.path.relpath(sys.argv[0], os.getcwd())] + sys.argv[1:]))
    for key, value in machine_info().items():
        print(f"{key}: {value}")
    print(flush=True)


# ---- speed mode ----------------------------------------------------------------------------------------------

def speed(args) -> List[Row]:
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if args.repeats < 5:
        print(f"note: --repeats {args.repeats} < 5: a smoke test, not a measurement\n")
    rows: List[Row] = []
    for name in args.models:
        pair = build_pair(name, args.hf_attn, args.ours_attn, args.gradient_checkpointing)
        ours_params = sum(p.numel() for p in pair[0].parameters())
        for device_name in devices:
            if device_name == "cuda" and not torch.cuda.is_available():
                print("cuda: not available, skipped")
                continue
            device = torch.device(device_name)
            for model in pair:
                model.to(device)
            args.compiled = maybe_compile(pair[0], args.compile)
            diff = check_same_function(pair, device)
            print(f"{name} on {device_name}: {ours_params / 1e6:.1f}M parameters; max |minibert − transformers| of "
                  f"the last hidden state (fp32, real tokens) {diff:.1e}", flush=True)
            dtypes = args.cuda_dtypes if device_name == "cuda" else args.cpu_dtypes
            for dtype_name in dtypes:
                for B in args.batch_sizes:
                    for T in args.lengths:
                        for what in args.what:
                            row = measure_row(pair, name, device, dtype_name, B, T, what, args)
                            rows.append(row)
                            print(f"  {name} {device_name} {dtype_name} B={B} T={T} {what}: minibert "
                                  f"{row.ours_ms:.1f} ms, transformers {row.theirs_ms:.1f} ms, ratio {row.ratio:.3f}",
                                  flush=True)
            for model in pair:
                model.to("cpu")
    print()
    print(f"minibert / transformers ({args.hf_attn} attention"
          f"{', minibert attention ' + args.ours_attn if args.ours_attn != 'sdpa' else ''}"
          f"{', minibert torch.compile' if args.compiled is not None else ''}"
          f"{', gradient checkpointing' if args.gradient_checkpointing else ''}), "
          f"median of {args.repeats} alternating runs after {args.warmup} warm-up runs each:\n")
    print(format_rows(rows, memory=not args.no_memory))
    return rows


# ---- epoch mode ----------------------------------------------------------------------------------------------

def epoch(args) -> List[dict]:
    from minibert import Tokenizer
    from tasks.domain.data import random_batches
    from tasks.domain.model import MultitaskBert
    from tasks.domain.processors import SentimentProcessor
    from tasks.engine import TrainConfig, Trainer

    class RandomBatches(SentimentProcessor):
        """The same processor with plain shuffled batches (no length bucketing): the baseline."""

        def train_batch_indices(self, epoch: int):
            return random_batches(len(self.splits["train"]), self.batch_size, seed=self.seed * 1_000_003 + epoch)

    data_dir = Path(args.data_dir) if args.data_dir else next(
        (d for d in (REPO / "data", REPO.parent / "shared" / "data") if (d / "ids-sst-train.csv").is_file()), None)
    if data_dir is None or not (data_dir / "ids-sst-train.csv").is_file():
        sys.exit("no ids-sst-train.csv: pass --data_dir or run `python -m tasks.fetch_data`")
    tokenizer = Tokenizer.from_pretrained(args.model)
    device = torch.device(args.devices[0] if args.devices else ("cuda" if torch.cuda.is_available() else "cpu"))
    runs = []
    for label, cls in (("length-bucketed", SentimentProcessor), ("random", RandomBatches)):
        proc = cls.from_files("sst", tokenizer, train=data_dir / "ids-sst-train.csv", max_examples=args.max_examples,
                              batch_size=args.batch_size, max_length=args.max_length, seed=11711)
        start = time.perf_counter()
        batches = list(proc.batches(0))  # the data path alone: tokenise and collate
        data_seconds = time.perf_counter() - start
        torch.manual_seed(0)
        model = MultitaskBert(BertModel.from_pretrained(args.model), ["sst"])
        out_dir = tempfile.TemporaryDirectory()
        config = TrainConfig(epochs=1, lr=5e-5, out_dir=out_dir.name, use_gpu=device.type == "cuda",
                             mixed_precision=args.epoch_dtype == "bf16")
        trainer = Trainer(model, {"sst": proc}, config, evaluate=lambda m: {"score": 0.0}, show_progress=False)
        model.train()
        runs.append(dict(label=label, batches=batches, data_seconds=data_seconds, trainer=trainer,
                         stream=iter(batches), seconds=0.0, out_dir=out_dir))
    # the two epochs step by step in turn, so that a change in the machine's load falls on both
    for _ in range(max(len(r["batches"]) for r in runs)):
        for run in runs:
            if run["stream"] is not None:
                try:
                    batch = next(run["stream"])
                except StopIteration:
                    run["stream"] = None
                    continue
                run["seconds"] += timed(lambda: run["trainer"].training_step([["sst"]], {"sst": iter([batch])}), device)
    results = []
    for run in runs:
        batches, train_seconds = run["batches"], run["seconds"]
        run["out_dir"].cleanup()
        real = sum(int(b["attention_mask"].sum()) for b in batches)
        slots = sum(b["attention_mask"].numel() for b in batches)
        sentences = sum(len(b["ids"]) for b in batches)
        results.append({"batching": run["label"], "batches": len(batches), "sentences": sentences,
                        "real tokens": real, "token slots": slots, "padding %": 100 * (1 - real / slots),
                        "data s": run["data_seconds"], "train s": train_seconds,
                        "sentences/s": sentences / train_seconds, "real tokens/s": real / train_seconds})
    base = results[1]["train s"]
    print(f"\none epoch of SST train ({results[0]['sentences']} sentences, batch {args.batch_size}, max_length "
          f"{args.max_length}) through tasks/engine/trainer.py's training_step, {args.model or 'all-MiniLM-L6-v2'}, "
          f"{device.type} {args.epoch_dtype}:\n")
    head = ["batching", "batches", "real tokens", "token slots", "padding %", "data path s", "train s",
            "sentences/s", "speed-up"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in results:
        print(f"| {r['batching']} | {r['batches']} | {r['real tokens']} | {r['token slots']} | {r['padding %']:.1f} | "
              f"{r['data s']:.1f} | {r['train s']:.1f} | {r['sentences/s']:.1f} | {base / r['train s']:.2f}× |")
    return results


# ---- main ----------------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mode", choices=("speed", "epoch"), default="speed")
    p.add_argument("--models", nargs="+", choices=("minilm", "base", "tiny"), default=["minilm", "base"],
                   help="minilm: the embedded all-MiniLM-L6-v2; base: BERT-base-shaped random weights; tiny: smoke tests")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[32])
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 128])
    p.add_argument("--what", nargs="+", choices=WHAT, default=list(WHAT))
    p.add_argument("--padding", choices=("none", "ragged"), default="none",
                   help="none: every position real; ragged: row lengths uniform in [T/2, T]")
    p.add_argument("--devices", nargs="+", choices=("cpu", "cuda"), default=None,
                   help="default: cpu, and cuda when available")
    p.add_argument("--cpu_dtypes", nargs="+", choices=tuple(DTYPES), default=["fp32"])
    p.add_argument("--cuda_dtypes", nargs="+", choices=tuple(DTYPES), default=["fp32", "bf16"],
                   help="bf16 / fp16: autocast around the forward, fp32 weights (as tasks/engine/trainer.py does)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per side and row (the median is reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--hf_attn", choices=("sdpa", "eager"), default="sdpa")
    p.add_argument("--ours_attn", choices=("sdpa", "manual"), default="sdpa")
    p.add_argument("--compile", action="store_true",
                   help="time torch.compile(minibert) (transformers stays eager); at least 3 warm-up runs")
    p.add_argument("--gradient_checkpointing", action="store_true", help="on both sides")
    p.add_argument("--no_memory", action="store_true", help="skip the peak-memory runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the rows to this file")
    g = p.add_argument_group("epoch mode")
    g.add_argument("--data_dir", default=None, help="default: data/ or ../shared/data")
    g.add_argument("--model", default=None, help="checkpoint for epoch mode (default: the embedded MiniLM)")
    g.add_argument("--batch_size", type=int, default=32)
    g.add_argument("--max_length", type=int, default=128)
    g.add_argument("--max_examples", type=int, default=None, help="a fixed random N training sentences (quick checks)")
    g.add_argument("--epoch_dtype", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast, CUDA only")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    if args.compile and args.warmup < 3:
        args.warmup = 3  # compilation (and the recompilations of each new mode) belong to the warm-up
    args.compiled = None
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*sdpa.*")
    print_header(args)
    if args.mode == "epoch":
        rows = epoch(args)
    else:
        rows = [asdict(r) for r in speed(args)]
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv, "machine": machine_info(), "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
