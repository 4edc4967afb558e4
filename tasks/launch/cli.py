"""The command line the CLIs share: short usage, help that reads group by group, `--config`, notices, errors.

    Parser         argparse with a one-line usage: an error prints it, the message and a hint, not 80 lines
    HelpFormatter  `--[no-]flag`, short metavars (N, X), the help on the flag's line, each default shown once
    config_tokens  a --config JSON file turned into the command-line tokens it stands for, each key checked
                   alone, so a bad value is an error naming the file and the key
    configure_logging  the project's notices (skipped rows, ...) as plain `warning: ...` lines on stderr
    fail           a user's bad input (a data file, a model folder): `prog: error: message`, exit 2, no traceback
    add_shared_flag  a flag several commands take (--model, --data_dir, --use_gpu, --predictions_dir), declared
                   once in SHARED_FLAGS; a command may give it its own default and help, never another kind
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import re
import sys
from pathlib import Path
from typing import List, NoReturn

from ..engine.config import TrainConfig

USAGE = "%(prog)s [-h] [--config FILE] [options]"
METAVARS = {int: "N", float: "X"}
REPO = Path(__file__).resolve().parents[2]

# The flags that several commands take, each declared here once (the training CLIs, predict, evaluate, embed,
# ensemble, the GAN): the same name, kind and metavar everywhere.
SHARED_FLAGS = {
    "model": dict(default=None, metavar="NAME|DIR",
                  help="the checkpoint: a local folder or a hub id such as bert-base-uncased (default: the embedded "
                       "all-MiniLM-L6-v2)"),
    "data_dir": dict(default=str(REPO / "data"), metavar="DIR", help="folder with the CS224N files"),
    "use_gpu": dict(action=argparse.BooleanOptionalAction, default=False,  # as the training loop's (TrainConfig)
                    help=next(f for f in dataclasses.fields(TrainConfig) if f.name == "use_gpu").metadata["help"]),
    "predictions_dir": dict(default=str(REPO / "predictions"), metavar="DIR", help="where the prediction files go"),
}


def add_shared_flag(parser, name: str, **overrides) -> argparse.Action:
    """--name as SHARED_FLAGS declares it; `overrides` may change only its default and help."""
    if set(overrides) - {"default", "help"}:
        raise TypeError(f"--{name}: a shared flag takes only its own default and help, got {sorted(overrides)}")
    return parser.add_argument(f"--{name}", **{**SHARED_FLAGS[name], **overrides})


def shown(value, action: argparse.Action):
    """A default as one would type it: on/off, a list space- (nargs) or comma-separated (--phases)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ("," if action.nargs is None else " ").join(map(str, value))
    return "''" if value == "" else value


class HelpFormatter(argparse.HelpFormatter):
    """--help in a screen per group. Each flag's default is shown once: the help's own words when it says
    "default:" (what an unset flag means: `default: --batch_size`), else appended `(default: ...)`."""

    def __init__(self, prog, indent_increment=2, max_help_position=30, width=None):
        super().__init__(prog, indent_increment, max_help_position, width)

    def _format_action_invocation(self, action):
        if isinstance(action, argparse.BooleanOptionalAction):
            return "--[no-]" + action.option_strings[0][2:]
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        metavar = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{action.option_strings[-1]} {metavar}"

    def _get_default_metavar_for_optional(self, action):
        return METAVARS.get(action.type, "VALUE")

    def _get_help_string(self, action):
        text = re.sub(r"\s*\(default: %\(default\)s\)", "", action.help or "")  # BooleanOptionalAction's (<3.14)
        if "default:" in text or "%(default)" in text or action.default in (None, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"

    def _expand_help(self, action):
        action = argparse.Namespace(**{**vars(action), "default": shown(action.default, action)})
        return super()._expand_help(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose error is the message and a hint, after a one-line usage."""

    def __init__(self, *args, **kw):
        kw.setdefault("usage", USAGE)
        kw.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kw)
        self.config_key = None  # set while a --config key is checked: its errors name the file and the key

    def error(self, message) -> NoReturn:
        if self.config_key:
            message = f"{self.config_key}: {re.sub(r'^argument [^:]*: ', '', message)}"
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(--help lists every flag, by group)\n")

    def group(self, title: str, description: str = None):
        """The argument group of that title, made on first use (several helpers add to one)."""
        for g in self._action_groups:
            if g.title == title:
                return g
        return self.add_argument_group(title, description)


# ---- --config ------------------------------------------------------------------------------------------------

def flag_tokens(action: argparse.Action, value) -> List[str]:
    """The command-line tokens for one JSON value: true/false -> --flag/--no-flag, a list -> the nargs values,
    null -> nothing (the default), a list for a one-value flag -> its items joined by commas (--phases)."""
    name = action.option_strings[0]
    if value is None:
        return []
    if isinstance(action, argparse.BooleanOptionalAction) or action.nargs == 0:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {json.dumps(value)}")
        if isinstance(action, argparse.BooleanOptionalAction):
            return [name if value else "--no-" + name[2:]]
        if value == action.const:
            return [name]
        if value == action.default:
            return []
        raise ValueError(f"{name} cannot be set to {json.dumps(value)}")
    items = value if isinstance(value, list) else [value]
    if any(isinstance(v, (bool, dict, list)) for v in items):
        raise ValueError(f"expected {'values' if action.nargs else 'a value'} for {name}, got {json.dumps(value)}")
    if action.nargs is None:
        return [f"{name}={','.join(map(str, items))}"]
    return [name, *map(str, items)]


def config_tokens(parser: Parser, path) -> List[str]:
    """The tokens --config FILE stands for; the real command line goes after them, so it wins. Each key is
    parsed alone first, with the parser's own types and choices, so an error names the file and the key."""
    where = f"--config {path}"
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        parser.error(f"{where}: {err}")
    if not isinstance(values, dict):
        parser.error(f"{where}: expected a JSON object of flag names and values, got {type(values).__name__}")
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}
    values.pop("resumes", None)  # run_config.json's record of a run's --resumes (tasks/launch/run.py), not a flag
    unknown = [key for key in values if key not in actions]
    if unknown:
        near = difflib.get_close_matches(unknown[0], actions, n=1)
        parser.error(f"{where}: key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: not "
                     f"{'flags' if len(unknown) > 1 else 'a flag'} of {parser.prog}"
                     + (f" (did you mean {near[0]!r}?)" if near else ""))
    tokens = []
    for key, value in values.items():
        parser.config_key = f"{where}: key {key!r}"
        try:
            try:
                mine = flag_tokens(actions[key], value)
            except ValueError as err:
                parser.error(str(err))
            parser.parse_known_args(mine)  # the key alone: its type, choices, nargs
        finally:
            parser.config_key = None
        tokens += mine
    return tokens


# ---- notices and errors --------------------------------------------------------------------------------------

class _Stderr(logging.StreamHandler):
    """Writes to the sys.stderr of the moment (a test's captured one, too), not the one at configuration."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


class _Plain(logging.Formatter):
    def format(self, record):
        text = record.getMessage()
        return f"{record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


def configure_logging(level: int = logging.INFO) -> None:
    """Once, at the CLI's edge: the `tasks`, `minibert` and `gan` loggers' notices as plain lines on stderr."""
    for name in ("tasks", "minibert", "gan"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, _Stderr) for h in logger.handlers):
            handler = _Stderr()
            handler.setFormatter(_Plain())
            logger.addHandler(handler)
        logger.setLevel(level)


class UserError(SystemExit):
    """Exit status 2, as argparse's; str() is the line printed (what a test matches)."""

    def __init__(self, line: str):
        super().__init__(2)
        self.line = line

    def __str__(self):
        return self.line


def fail(prog: str, message) -> NoReturn:
    """A user's bad input: the message alone, `prog: error: message` as argparse writes it, and exit 2. No
    traceback: it would point at our code, where the problem is in their file or flag."""
    line = f"{prog}: error: {message}"
    print(line, file=sys.stderr)
    raise UserError(line)
