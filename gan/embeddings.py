"""Do AC-GAN-BERT's fakes cluster by class? A PCA picture of real and generated embeddings, and a number:
a linear probe trained on real embeddings only classifies the generated ones by their conditioning label.

    python gan/embeddings.py --use_gpu                                  # train AC-GAN-BERT (10% labelled), then look
    python gan/embeddings.py --checkpoint runs/gan/sst-acganbert/best.safetensors
    python gan/embeddings.py --fractions 0.01 0.1 --seeds 1 2 --max_examples 2000 --epochs 2

The measures are gan/probe.py's, in the real training embeddings' principal subspace (near-constant
dimensions dropped): a linear probe trained on the real embeddings (gold labels) reads real dev embeddings
(how separable the classes are at all) and `--per_class` fakes per class against chance (1 / k); so does
the nearest real class centroid; spread, coverage and precision (gan/diversity.py) say whether the fakes
are diverse or collapsed. Flags this script does not know go to gan/train.py (--lr, --model, --data_dir, ...).
Writes, under --out_dir: embeddings-{task}-l{fraction}-s{seed}.png per model and probe.csv.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable, not this folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from gan import train  # noqa: E402
from gan.plots import plot_embeddings  # noqa: E402
from gan.probe import fake_probe, fit_reference, pca, project  # noqa: E402
from minibert import Tokenizer  # noqa: E402
from tasks.domain.data import SentenceCollator, get_task, subsample  # noqa: E402
from tasks.engine.devices import to_device  # noqa: E402
from tasks.launch.configs import RunConfig  # noqa: E402
from tasks.launch.run import task_files  # noqa: E402
from tasks.engine.devices import pick_device  # noqa: E402

PASSTHROUGH = "Any other flag goes to every run of gan/train.py (see python gan/train.py --help)."
COLUMNS = ["task", "labeled_fraction", "seed", "dev_accuracy", "probe_real_dev", "probe_generated", "centroid_generated",
           "chance", "spread", "coverage", "class_coverage", "precision", "off_subspace", "off_subspace_real", "png",
           "checkpoint"]
CLASS_NAMES = {"sst": ["0 very neg.", "1 negative", "2 neutral", "3 positive", "4 very pos."],
               "cfimdb": ["0 negative", "1 positive"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=PASSTHROUGH,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="a best.safetensors of gan/train.py (acganbert); else train one per cell")
    p.add_argument("--task", choices=train.TASKS, default="sst")
    p.add_argument("--fractions", nargs="+", type=float, default=[0.1], help="labelled fractions to train at")
    p.add_argument("--seeds", nargs="+", type=int, default=[1], help="one model per seed")
    p.add_argument("--epochs", type=int, default=3, help="epochs per model")
    p.add_argument("--max_examples", type=int, default=None, help="a fixed random N rows of each file")
    p.add_argument("--per_class", type=int, default=200, help="generated embeddings per class")
    p.add_argument("--out_dir", default="runs/gan_embeddings")
    args, passthrough = p.parse_known_args(argv)
    if args.per_class < 2:
        p.error(f"--per_class must be >= 2, got {args.per_class}")
    if "--method" in passthrough:
        p.error("--method: the probe needs a conditional generator, so this script always trains acganbert")
    return args, passthrough


@torch.no_grad()
def embed_examples(model, examples, tokenizer, max_length: int, device, batch_size: int = 128) -> torch.Tensor:
    """The encoder's pooled embeddings (N, C) of sentence examples, in eval mode."""
    collate, out = SentenceCollator(tokenizer, max_length), []
    model.eval()
    for start in range(0, len(examples), batch_size):
        batch = to_device(collate(examples[start:start + batch_size]), device)
        out.append(model.embed_batch(batch).float().cpu())  # (b, C)
    return torch.cat(out)


@torch.no_grad()
def analyze(model, meta: dict, files: dict, max_examples, max_length: int, per_class: int, device, seed: int,
            png_path) -> dict:
    """Probe accuracies, diversity and the PCA picture of one trained AC-GAN-BERT."""
    if meta["gan"]["method"] != "acganbert":
        raise ValueError(f"the checkpoint's method is {meta['gan']['method']!r}: the probe needs 'acganbert'")
    task, k = meta["task"], meta["num_labels"]
    tokenizer = Tokenizer.from_pretrained(meta["model"])
    model.to(device).eval()
    load = get_task(task).loader
    train_rows, dev_rows = subsample(load(Path(files["train"])), max_examples), subsample(load(Path(files["dev"])), max_examples)
    x_train = embed_examples(model, train_rows, tokenizer, max_length, device)  # (N, C)
    y_train = torch.tensor([e.label for e in train_rows])
    x_dev = embed_examples(model, dev_rows, tokenizer, max_length, device)
    y_dev = torch.tensor([e.label for e in dev_rows])
    y_fake = torch.arange(k).repeat_interleave(per_class)  # balanced: chance is exactly 1 / k
    rng = torch.Generator(device=device).manual_seed(seed)
    x_fake = model.generate(len(y_fake), y_fake.to(device), device=device, rng=rng)[0].float().cpu()  # (k·n, C)

    ref = fit_reference(x_train, y_train, k, knn_points=min(1000, len(x_train) - 1))
    fakes = fake_probe(model, x_train, y_train, per_class, seed, reference=ref)  # the same seed: the fakes above
    mean, axes = pca(x_dev)
    plot_embeddings(project(x_dev, mean, axes).numpy(), y_dev.numpy(), project(x_fake, mean, axes).numpy(),
                    y_fake.numpy(), CLASS_NAMES.get(task, [str(c) for c in range(k)]), png_path,
                    title=f"{task.upper()}, AC-GAN-BERT, {meta['labeled_fraction']:.0%} labelled: real vs generated")
    numbers = {"probe_real_dev": ref.probe.accuracy(ref.space(x_dev), y_dev), "probe_generated": fakes["probe_acc"],
               "centroid_generated": fakes["centroid_acc"], **{c: fakes[c] for c in COLUMNS if c in fakes}}
    return {**{c: round(v, 4) for c, v in numbers.items()}, "png": str(png_path)}


def main(argv=None):
    args, passthrough = parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    cells = [(None, None)] if args.checkpoint else [(f, s) for f in args.fractions for s in args.seeds]
    for fraction, seed in tqdm(cells, desc="embeddings", disable=len(cells) == 1):
        if args.checkpoint:
            targs = train.parse_args([*passthrough, "--tasks", args.task])
            ckpt, result = Path(args.checkpoint), {}
        else:
            cell_dir = out / "cells" / f"{args.task}-l{fraction:g}-s{seed}"
            targs = train.parse_args([*passthrough, "--tasks", args.task, "--method", "acganbert",
                                      "--labeled_fraction", str(fraction), "--seed", str(seed), "--epochs",
                                      str(args.epochs), "--out_dir", str(cell_dir), "--predictions_dir",
                                      str(cell_dir / "predictions"),
                                      *(["--max_examples", str(args.max_examples)] if args.max_examples else [])])
            cell_dir.mkdir(parents=True, exist_ok=True)
            with open(cell_dir / "log.txt", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
                result = train.run_gan(RunConfig.from_args(targs, "gan"), args.task, task_files(targs, args.task, args.task),
                                       show_progress=len(cells) == 1)
            ckpt = cell_dir / "best.safetensors"
        model, meta = train.load_checkpoint(ckpt)
        f, s = meta["labeled_fraction"], meta["seed"]
        png = out / f"embeddings-{meta['task']}-l{f:g}-s{s}.png"
        numbers = analyze(model, meta, task_files(targs, meta["task"], meta["task"]), args.max_examples,
                          targs.max_length, args.per_class, pick_device(targs.use_gpu), s, png)
        rows.append({"task": meta["task"], "labeled_fraction": f, "seed": s,
                     "dev_accuracy": round(result.get("dev_accuracy", float("nan")), 4), **numbers, "checkpoint": str(ckpt)})
        print(f"{meta['task']} {f:.0%} labelled, seed {s}: linear probe trained on real embeddings — real dev "
              f"{numbers['probe_real_dev']:.3f}, generated {numbers['probe_generated']:.3f} by conditioning label "
              f"(nearest real centroid {numbers['centroid_generated']:.3f}; chance {numbers['chance']:.3f}); "
              f"spread {numbers['spread']:.2f}, class coverage {numbers['class_coverage']:.2f}; {png}")
    with open(out / "probe.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    if len(rows) > 1:
        gen = [r["probe_generated"] for r in rows]
        print(f"probe on generated embeddings: mean {np.mean(gen):.3f} ± {np.std(gen):.3f} over {len(rows)} models "
              f"(chance {rows[0]['chance']:.3f})")
    print(f"wrote {out / 'probe.csv'}")
    return rows


if __name__ == "__main__":
    main()
