"""Single-task sentiment classification on SST-5 and/or CFIMDB (the coursework's classifier.py).

    python tasks/classifier.py --option pretrain     # frozen encoder, a linear probe on its embedding
    python tasks/classifier.py --option finetune     # the whole model fine-tuned
    python tasks/classifier.py --tasks cfimdb --use_gpu
    python tasks/classifier.py --tasks sst --phases dae,contrastive,finetune   # DAE → contrastive → fine-tune
    python tasks/classifier.py --tasks sst --adversarial                       # contrastive adversarial training
    python tasks/classifier.py --tasks sst --child_tuning D                    # Child-Tuning-D

Each task is trained on its own (one model each) and writes predictions/{option}-{task}-{dev,test}-output.csv.
"""
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable, not this folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tasks import techniques  # noqa: E402
from tasks.launch.configs import RunConfig  # noqa: E402
from tasks.launch.run import add_task_file_args, base_parser, parse_with_config, run, task_files  # noqa: E402

TASKS = ("sst", "cfimdb")


def build_parser(description: str = __doc__.splitlines()[0]):
    parser = base_parser(description, "classifier", out_dir="runs/classifier", epochs=3, lr=1e-4, head_lr=1e-3)
    parser.group("data").add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), metavar="TASK",
                                      help=f"train one model on each of these ({', '.join(TASKS)})")
    for name in TASKS:
        add_task_file_args(parser, name, name, outputs="<option>-{prefix}-{split}-output.csv")
    return parser


def parse_args(argv=None):
    return parse_with_config(build_parser(), argv)


def main(argv=None):
    args = parse_args(argv)
    results = {}
    spec = RunConfig.from_args(args, "classifier")
    finetunes = techniques.finetunes(spec.techniques)  # not: a phases-only run, which saves an encoder
    for name in args.tasks:  # each task its own run, in its own folder
        one = spec.with_flags(out_dir=os.path.join(args.out_dir, f"{name}-{args.option}"))
        print(f"=== {name} ({args.option}) ===")
        files = task_files(args, name, name)
        for split in ("dev", "test"):  # as the coursework names them: predictions/finetune-sst-dev-output.csv
            if getattr(args, f"{name}_{split}_out") is None:
                files[f"{split}_out"] = os.path.join(args.predictions_dir, f"{args.option}-{name}-{split}-output.csv")
        scores = run(one, [name], {name: files})
        results[name] = scores[name] if finetunes else scores  # without fine-tuning: the phases' losses
    if finetunes:
        print("dev accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return results


if __name__ == "__main__":
    main()
