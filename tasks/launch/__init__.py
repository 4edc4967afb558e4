"""From a command line to a run and its predictions: what the commands (tasks/*.py, gan/train.py) share.

    cli.py       the parser (short usage, grouped help, --config checked as flags, `error:` lines), the flags
                 several commands share, declared once
    configs.py   the model's and the data's flags as frozen dataclasses (TrainConfig is the engine's)
    run.py       the run: build the model and processors, attach the techniques, train, save, predict
    run_lock.py  one run per --out_dir, and --resume's check that the training flags match the checkpoint
    inference.py predictions and dev scores from a model folder (predict, evaluate, and a run's last step)
"""
