"""Multitask fine-tuning: SST-5 sentiment, Quora paraphrase and STS similarity on one shared encoder.

    python tasks/multitask.py                 # the default run on the embedded all-MiniLM-L6-v2
    python tasks/multitask.py --use_gpu       # the coursework form
    python tasks/multitask.py --model bert-base-uncased --tasks sst sts --pcgrad

Writes predictions/{sst,para,sts}-{dev,test}-output.csv, and runs/multitask/{metrics.jsonl,run_config.json,best.safetensors,last.safetensors}.
"""
import argparse
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable, not this folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tasks.domain.model import PARA_HEADS, STS_COSINE_MAPS, STS_HEADS  # noqa: E402
from tasks.domain.para_augment import AUGMENTS  # noqa: E402
from tasks.launch.run import add_task_file_args, base_parser, parse_with_config, run, task_files  # noqa: E402

TASKS = ("sst", "para", "sts")
# STS's MSE on the 0–1 scale (~0.03) is ~30x smaller than the other losses: unweighted, the shared encoder
# follows SST and Quora, and STS reaches 0.850 dev Pearson where it gets 0.88 alone (README, "multitask")
LOSS_WEIGHTS = {"sst": 1.0, "para": 1.0, "sts": 10.0}


def parse_args(argv=None):
    parser = base_parser(__doc__.splitlines()[0], "multitask", out_dir="runs/multitask", epochs=3, lr=1e-4, head_lr=1e-3)
    g = parser.add_argument_group("multitask")
    g.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), metavar="TASK",
                   help=f"train these of the tasks ({', '.join(TASKS)})")
    g.add_argument("--para_head", choices=PARA_HEADS, default="cross",
                   help="Quora's head: cross = a linear layer on [CLS] a [SEP] b [SEP]; siamese = an MLP on "
                        "[u; v; |u−v|; u∗v] of the two sentence vectors; cross+siamese = the mean of both")
    g.add_argument("--sts_head", choices=STS_HEADS, default="cosine",
                   help="STS's head: the cosine of the two sentence vectors, or a linear layer on the joined pair")
    g.add_argument("--sts_loss", choices=("mse", "mse+corr"), default="mse",
                   help="STS's loss: MSE on the 0–1 scale, or MSE plus (1 − the batch's Pearson r)")
    g.add_argument("--sts_cosine_map", choices=STS_COSINE_MAPS, default="clamp",
                   help="the cosine head's 0–5 score: clamp = 5·clamp(cos, 0, 1); affine = 5·(cos + 1)/2, in the "
                        "loss's target space and in the predictions")
    g.add_argument("--para_augment", choices=AUGMENTS, default="none",
                   help="extra Quora training pairs: each pair reversed, and/or duplicates by transitivity; never "
                        "with a dev/test question (tasks/domain/para_augment.py)")
    g.add_argument("--para_augment_cap", type=int, default=20,
                   help="at most this many transitive pairs per group of duplicates (negative: no cap)")
    g.add_argument("--symmetric_pairs", action=argparse.BooleanOptionalAction, default=False,
                   help="train on each pair in a random order per epoch and predict from the mean over both orders")
    for name in TASKS:
        g.add_argument(f"--{name}_batch_size", type=int, default=None,
                       help=f"{name}'s batch size (default: --batch_size)")
        g.add_argument(f"--{name}_loss_weight", type=float, default=LOSS_WEIGHTS[name],
                       help=f"scale of {name}'s loss in the summed step")
        add_task_file_args(parser, name, name)
    return parse_with_config(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    files = {name: task_files(args, name, name) for name in args.tasks}
    batch_sizes = {name: getattr(args, f"{name}_batch_size") for name in args.tasks}
    loss_weights = {name: getattr(args, f"{name}_loss_weight") for name in args.tasks}
    return run(args, args.tasks, files, "multitask", batch_sizes, para_head=args.para_head, sts_head=args.sts_head,
               sts_loss=args.sts_loss, symmetric_pairs=args.symmetric_pairs, loss_weights=loss_weights,
               sts_cosine_map=args.sts_cosine_map, para_augment=args.para_augment,
               para_augment_cap=args.para_augment_cap)


if __name__ == "__main__":
    main()
