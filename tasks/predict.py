"""Write the coursework prediction files with a saved model, without training.

    python tasks/predict.py --model runs/multitask/model [--use_gpu]
    python tasks/predict.py --model runs/multitask/model --tasks sts --sts_test data/sts-test-student.csv

For every task the model has a head for, predicts the dev and test files and writes {task}-{dev,test}-output.csv
beside the model, in <the model folder's parent>/predictions (runs/multitask/predictions for
runs/multitask/model), not in the predictions/ a training run wrote: the same flags, file names and prediction
path (processors built from the model's head config, length-sorted batches) as the end of training, so the
files are identical. A file elsewhere (--predictions_dir, --sst_dev_out, ...) that exists is replaced only with
--overwrite.
"""
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable, not this folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tasks.engine.devices import pick_device  # noqa: E402
from tasks.launch.inference import build_processor, dev_table, load_or_exit, model_tasks, predict_and_write  # noqa: E402
from tasks.domain.metrics import format_table  # noqa: E402
from tasks.launch.cli import Parser, add_shared_flag, configure_logging, fail  # noqa: E402
from tasks.launch.run import add_task_file_args, task_files  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TASKS = ("sst", "cfimdb", "para", "sts")


def parse_args(argv=None, description=None, splits=("dev", "test"), writes=True):
    """The flags of predict.py, and of evaluate.py (`writes=False`: it writes no files, so it has no output flags)."""
    parser = Parser(description=description or __doc__.splitlines()[0], usage="%(prog)s [-h] [options]")
    add_shared_flag(parser, "model", default=str(REPO / "runs" / "multitask" / "model"),
                    help="a model folder written by training (a plain encoder or hub id is refused: its heads "
                         "are untrained)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=None, metavar="TASK",
                        help=f"some of the model's tasks ({', '.join(TASKS)}) (default: every task the model has)")
    add_shared_flag(parser, "use_gpu")
    add_shared_flag(parser, "data_dir")
    if writes:
        add_shared_flag(parser, "predictions_dir", default=None,
                        help="where the prediction files go (default: beside the model, <the model folder's "
                             "parent>/predictions: runs/multitask/predictions for runs/multitask/model)")
        parser.add_argument("--overwrite", action="store_true",
                            help="replace prediction files that exist outside the model's own predictions folder "
                                 "(e.g. a training run's, in predictions/)")
    if "test" in splits:
        parser.add_argument("--splits", nargs="+", choices=splits, default=list(splits), metavar="SPLIT",
                            help="the splits to predict (dev, test)")
    for name in TASKS:
        add_task_file_args(parser, name, name, outputs="{prefix}-{split}-output.csv" if writes else None, inputs=splits)
    configure_logging()
    args = parser.parse_args(argv)
    if writes and args.predictions_dir is None:
        args.predictions_dir = str(beside(args.model))
    return args


def beside(model) -> Path:
    """The model's own predictions folder: a sibling of the model folder (the run's folder, for a trained model)."""
    return Path(model).resolve().parent / "predictions"


def load(args, prog: str, splits):
    """The model, its tasks' processors (dev/test only) and their files."""
    model = load_or_exit(args.model, prog)
    device = pick_device(args.use_gpu)
    model.to(device)
    files, processors = {}, {}
    for name in model_tasks(model, args.tasks, prog):
        files[name] = task_files(args, name, name)
        try:
            processors[name] = build_processor(name, model, model.tokenizer, files[name], splits=splits)
        except (OSError, ValueError) as err:  # a missing, unreadable or empty data file
            fail(prog, err)
    return model, processors, files, device


def main(argv=None):
    args = parse_args(argv)
    model, processors, files, device = load(args, "predict.py", args.splits)
    written = sorted(files[n][f"{s}_out"] for n, p in processors.items() for s in args.splits if p.splits[s])
    others = [f for f in written if Path(f).exists() and Path(f).resolve().parent != beside(args.model)]
    if others and not args.overwrite:  # e.g. the predictions/ of a training run: not ours to replace unasked
        fail("predict.py", f"{', '.join(others)} already exist{'s' if len(others) == 1 else ''}, outside this model's "
                           f"own predictions folder ({beside(args.model)}); pass --overwrite to replace "
                           f"{'it' if len(others) == 1 else 'them'}, or choose another --predictions_dir")
    scores = predict_and_write(model, processors, files, device, args.splits)
    if scores:
        print(format_table(dev_table(scores)))
    print("predictions written:\n  " + "\n  ".join(written))
    return scores


if __name__ == "__main__":
    main()
