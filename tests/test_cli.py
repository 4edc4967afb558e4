"""The command line (tasks/launch/cli.py): --config values get the command line's checks, errors are short and name
the file and key, --help reads group by group with one default per flag, notices are plain logged lines,
a bad data file is `error: ...` without a traceback, prediction shows progress, the attention grid is legible."""
import argparse
import json
import logging
import re

import pytest
import torch

from gan import train as gan_train
from minibert import BertModel, Tokenizer, tour_plots
from tasks import ablate, classifier, evaluate, multitask, predict
from tasks.launch.cli import configure_logging
from tasks.domain.data import load_sentiment
from tasks.launch.inference import predict_split
from tasks.domain.model import MultitaskBert
from tasks.domain.processors import SentimentProcessor
from tasks.launch.run import resolved_flags, write_run_config
from tasks.domain.saved_model import save_model_folder

PARSERS = {"multitask": multitask.parse_args, "classifier": classifier.parse_args, "gan": gan_train.parse_args,
           "ablate": ablate.parse_args}
HELPS = {**PARSERS, "predict": predict.parse_args,
         "evaluate": lambda argv: predict.parse_args(argv, splits=("dev",), writes=False)}


def config_file(tmp_path, values) -> str:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(values))
    return str(path)


def parse_error(parse, argv, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        parse(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err


# ---- --config -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("values,message", [
    ({"predict_test": "no"}, "key 'predict_test': expected true or false, got \"no\""),  # before: taken as true
    ({"epochs": 1.5}, "key 'epochs': invalid int value: '1.5'"),  # before: a traceback from optim/schedules.py
    ({"tasks": ["sst", "cfimdb"]}, "key 'tasks': invalid choice: 'cfimdb'"),
    ({"tasks": "sst para"}, "key 'tasks': invalid choice: 'sst para'"),
    ({"lr": [1, 2]}, "key 'lr': invalid float value: '1,2'"),
    ({"phases": "finetune,dae"}, "key 'phases': phases must appear once each"),
    ({"schedule": "exp"}, "key 'schedule': invalid choice: 'exp'"),
    ({"epochz": 3}, "key 'epochz': not a flag of"),
    ({"epochz": 3, "lrr": 1}, "keys 'epochz', 'lrr': not flags of"),
])
def test_a_bad_config_value_is_an_error_naming_the_file_and_the_key(tmp_path, capsys, values, message):
    path = config_file(tmp_path, values)
    err = parse_error(multitask.parse_args, ["--config", path], capsys)
    lines = err.splitlines()
    assert len(lines) == 3 and lines[0].startswith("usage: ") and "--help" in lines[2]
    assert message in lines[1] and lines[1].split(": error: ")[1].startswith(f"--config {path}")


def test_checks_across_flags_say_the_config_file_took_part(tmp_path, capsys):
    path = config_file(tmp_path, {"epochs": 0})  # the training loop's own check, now at parse time
    err = parse_error(multitask.parse_args, ["--config", path], capsys)
    assert f"error: epochs must be >= 1, lr > 0, tasks_per_step >= 0 and grad_accum >= 1 (flags from --config {path} " in err
    path = config_file(tmp_path, {"rdrop_alpha": 1.0, "adversarial": True})  # a technique's conflict hook
    assert f"(flags from --config {path} and the command line)" in parse_error(multitask.parse_args, ["--config", path], capsys)


def test_unreadable_config_files_are_errors(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{'epochs': 1}")
    assert "bad.json: Expecting property name" in parse_error(multitask.parse_args, ["--config", str(tmp_path / "bad.json")], capsys)
    (tmp_path / "list.json").write_text("[1, 2]")
    assert "expected a JSON object" in parse_error(multitask.parse_args, ["--config", str(tmp_path / "list.json")], capsys)
    assert "No such file" in parse_error(multitask.parse_args, ["--config", str(tmp_path / "none.json")], capsys)


def test_config_values_become_the_tokens_they_stand_for_and_the_command_line_wins(tmp_path):
    path = config_file(tmp_path, {"tasks": "sst", "predict_test": False, "lr": 0.5, "phases": ["dae", "finetune"],
                                  "head_lr": None, "adv_tasks": "", "max_examples": 7})
    args = multitask.parse_args(["--config", path])
    assert args.tasks == ["sst"]  # before: the letters 's', 's', 't'
    assert args.predict_test is False and args.lr == 0.5 and args.phases == ("dae", "finetune")
    assert args.head_lr == 1e-3 and args.adv_tasks == "" and args.max_examples == 7  # null: the default
    args = multitask.parse_args(["--config", path, "--predict_test", "--lr", "0.1", "--tasks", "sts", "para"])
    assert args.predict_test is True and args.lr == 0.1 and args.tasks == ["sts", "para"] and args.max_examples == 7


NON_DEFAULT = ["--no-predict_test", "--gradient_checkpointing", "--no-mixed_precision", "--lr", "3e-05",
               "--max_examples", "9", "--seed", "5", "--out_dir", "x y", "--hidden_dropout_prob", "0"]
TECHNIQUES = ["--no-dae_tie_encoder_decoder", "--phases", "dae,finetune", "--adversarial", "--adv_tasks", "sst", "--pcgrad"]


@pytest.mark.parametrize("cli,extra", [("multitask", TECHNIQUES + ["--tasks", "sts", "sst", "--sts_batch_size", "4"]),
                                       ("classifier", TECHNIQUES + ["--tasks", "cfimdb", "sst"]),
                                       ("gan", ["--method", "ganbert", "--g_lr", "0.001"]),
                                       ("ablate", ["--seeds", "1", "2", "3", "--lr_grid", "1e-4", "2e-4",
                                                   "--select_on", "heldout"])])
def test_run_config_json_round_trips_through_config_for_every_cli(tmp_path, cli, extra):
    parse = PARSERS[cli]
    args = parse(NON_DEFAULT + extra)
    if cli == "ablate":
        args.tune_grid = None  # ablate parses --tune_grid into a dict after the parser; its cells never write it
    write_run_config(args, tmp_path)  # what run() writes for every run
    again = parse(["--config", str(tmp_path / "run_config.json")])
    if cli == "ablate":
        again.tune_grid = None
    assert resolved_flags(again) == resolved_flags(args) == json.loads((tmp_path / "run_config.json").read_text())


def test_a_runs_own_run_config_json_reads_back_through_config(tiny_checkpoint, tiny_data, tmp_path):
    out = tmp_path / "run"
    classifier.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--tasks", "sst", "--epochs", "1",
                     "--max_examples", "8", "--no-predict_test", "--out_dir", str(out),
                     "--predictions_dir", str(tmp_path / "pred")])
    written = json.loads((out / "sst-finetune" / "run_config.json").read_text())
    assert written["tasks"] == ["sst"] and written["predict_test"] is False and written["phases"] == ["finetune"]
    again = classifier.parse_args(["--config", str(out / "sst-finetune" / "run_config.json")])
    assert resolved_flags(again) == written


# ---- help and argparse errors ----------------------------------------------------------------------------------

def help_text(cli, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        HELPS[cli](["--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def flag_entries(text: str) -> dict:
    """--flag -> its help, joined over its lines."""
    entries, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if m:
            current = m.group(1).split(", ")[-1].split(" ")[0].replace("--[no-]", "--")
            entries[current] = (m.group(2) or "").strip()
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


@pytest.mark.parametrize("cli", list(HELPS))
def test_every_flag_has_help_and_exactly_one_default(cli, capsys, monkeypatch):
    text = help_text(cli, capsys, monkeypatch)
    assert re.match(r"usage: \S+ \[-h\] (\[--config FILE\] )?\[options\]$", text.splitlines()[0])
    entries = flag_entries(text)
    assert len(entries) >= 9
    for name, help in entries.items():
        assert help, f"{cli} {name} has no help"
        if name != "--help":
            assert help.count("default:") == 1, f"{cli} {name}: {help}"
        assert "(default: None)" not in help and "(default: --lr) (default:" not in help


def test_multitask_help_groups_fit_a_screen_and_data_files_have_their_own(capsys, monkeypatch):
    text = help_text("multitask", capsys, monkeypatch)
    groups = dict(re.findall(r"(?ms)^(\S[^\n]*):\n(.*?)(?=^\S|\Z)", text))
    assert set(flag_entries(groups["options"])) == {"--help", "--config"}  # before: and the 15 data files
    files = flag_entries(groups["data files"])
    assert len(files) == 15 and all(v.startswith("default: <") for v in files.values())
    assert max(len(body.splitlines()) for body in groups.values()) <= 60
    assert "--head_lr X" in text and "(default: 0.001)" in flag_entries(groups["training"])["--head_lr"]
    assert len(text.splitlines()) < 300  # before: 395


def test_evaluate_help_lists_no_output_flags(capsys, monkeypatch):
    text = help_text("evaluate", capsys, monkeypatch)
    assert "_out" not in text and "--predictions_dir" not in text and "--sst_train" not in text and "--sst_dev" in text


@pytest.mark.parametrize("cli", ["multitask", "gan", "ablate"])
def test_an_argparse_error_is_a_short_usage_the_message_and_a_hint(cli, capsys):
    err = parse_error(PARSERS[cli], ["--epochs", "x"], capsys)
    lines = err.splitlines()
    assert len(lines) == 3  # before: an 80-line usage first
    assert re.match(r"usage: \S+ \[-h\] \[--config FILE\] \[options\]$", lines[0])
    assert lines[1].endswith("error: argument --epochs: invalid int value: 'x'") and "--help" in lines[2]


# ---- notices, data errors, progress -----------------------------------------------------------------------------

def test_skipped_rows_are_a_plain_logged_warning_not_a_python_warning(tmp_path, capsys, caplog, recwarn):
    path = tmp_path / "ids-sst-dev.csv"
    path.write_text("\tid\tsentence\tsentiment\n0\ta\t Good .\t1\n1\tb\t Bad .\t9\n")
    configure_logging()
    configure_logging()  # once is enough: a second call adds no second handler
    capsys.readouterr()
    assert [e.id for e in load_sentiment(path)] == ["a"]
    err = capsys.readouterr().err
    assert err == f"warning: {path}: skipped 1 malformed row(s) of 2 (line 3: label '9' is not an integer in [0, 4])\n"
    assert not recwarn.list  # before: a UserWarning echoing `examples = [] if path is None ...`
    assert [(r.name, r.levelno) for r in caplog.records] == [("tasks.domain.data", logging.WARNING)]


@pytest.fixture(scope="module")
def saved_model(tiny_checkpoint, tmp_path_factory):
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    model = MultitaskBert(BertModel.from_pretrained(tiny_checkpoint), ["sst"], tokenizer=tok)
    return model, save_model_folder(model, tok, tmp_path_factory.mktemp("saved") / "model")


def test_predict_and_evaluate_stop_on_a_bad_data_file_with_the_message_alone(saved_model, tiny_data, tmp_path, capsys):
    empty = tmp_path / "ids-sst-dev.csv"
    empty.write_text("\tid\tsentence\tsentiment\n")
    for cli, prog in ((predict, "predict.py"), (evaluate, "evaluate.py")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            cli.main(["--model", str(saved_model[1]), "--data_dir", str(tiny_data), "--sst_dev", str(empty)])
        assert stop.value.code == 2  # before: 1
        assert capsys.readouterr().err == f"{prog}: error: {empty}: no usable rows (a header and no rows, or every " \
                                          "row skipped as malformed): nothing to evaluate sst on\n"


def test_predicting_shows_progress_and_changes_nothing(saved_model, tiny_data, capsys):
    model, _ = saved_model
    proc = SentimentProcessor.from_files("sst", model.tokenizer, dev=tiny_data / "ids-sst-dev.csv")
    proc.eval_batch_size = 5
    seen = []
    plain = proc.predict(model, "dev", "cpu", progress=seen.append)
    assert seen == [5] * 6 + [2] and plain == proc.predict(model, "dev", "cpu")
    capsys.readouterr()
    assert predict_split(proc, model, "dev", "cpu") == plain
    assert "predicting sst dev" in capsys.readouterr().err


def test_the_attention_grid_has_legible_labels_and_a_colour_bar(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(tour_plots, "_save", lambda plt, fig, path: figures.append(fig))
    tokens = [f"tok{i}" for i in range(20)]
    layers, heads = 3, 4  # (MiniLM has 6 x 12 maps; drawing 72 costs seconds and shows nothing more)
    att = torch.softmax(torch.randn(layers, heads, 20, 20), -1)  # a 20-token pair
    drawn = tour_plots.draw_grid(att, tokens, tmp_path / "attention.png", "test")
    torch.testing.assert_close(drawn.float(), att, rtol=0, atol=1e-6)
    fig = figures[0]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(fig.axes) == layers * heads + 1 and len(bars) == 1  # before: no colour bar
    corner = fig.axes[(layers - 1) * heads]  # bottom left: both its axes are labelled
    sizes = [t.get_fontsize() for t in corner.get_xticklabels() + corner.get_yticklabels()]
    assert len(sizes) == 40 and min(sizes) >= 9  # before: 6.6 points for 20 tokens
    width, height = fig.get_size_inches()
    assert height / layers >= 20 * 9 / 72  # each map holds its 20 labels at that size


def _parser_of(parse_args, monkeypatch):
    """The ArgumentParser a CLI's parse_args builds (caught at its first parse)."""
    class Caught(Exception):
        pass

    def catch(self, *a, **k):
        raise Caught(self)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
    with pytest.raises(Caught) as caught:
        parse_args([])
    return caught.value.args[0]


def test_the_shared_flags_are_one_declaration_in_every_command(monkeypatch):
    """--model, --data_dir, --use_gpu and --predictions_dir: the same kind and metavar in every command that
    takes them (tasks/launch/cli.py's SHARED_FLAGS; --use_gpu's help is the training loop's)."""
    from tasks import embed, ensemble
    from tasks.launch.cli import SHARED_FLAGS
    commands = {"multitask": multitask.parse_args, "classifier": classifier.parse_args, "gan": gan_train.parse_args,
                "ablate": ablate.parse_args, "predict": predict.parse_args, "evaluate": evaluate.parse_args,
                "embed": embed.parse_args, "ensemble": ensemble.parse_args}
    seen = {name: [] for name in SHARED_FLAGS}
    for command, parse_args in commands.items():
        actions = {a.dest: a for a in _parser_of(parse_args, monkeypatch)._actions}
        for name, spec in SHARED_FLAGS.items():
            if name in actions:
                action = actions[name]
                seen[name].append(command)
                assert action.option_strings[0] == f"--{name}" and action.metavar == spec.get("metavar"), (command, name)
                assert isinstance(action, spec.get("action", argparse._StoreAction)), (command, name)
    assert seen["use_gpu"] == list(commands) and len(seen["model"]) == 7 and len(seen["data_dir"]) == 7
