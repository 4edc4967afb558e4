"""tasks/levers.py: every arm runs the multitask CLI with only its flags changed, a finished cell is read
back instead of re-run, and the table's deltas are against base."""
import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import levers


def _write_metrics(cell: Path, dev_by_epoch, best_epoch, logged=None):
    cell.mkdir(parents=True)
    lines = [{"epoch": i + 1, "step": 10 * (i + 1), "dev": dev, "seconds": 5.0, **(logged or {})}
             for i, dev in enumerate(dev_by_epoch)]
    lines.append({"final": True, "best_epoch": best_epoch, "best_step": 10 * best_epoch, "dev": {}})
    (cell / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def _dev(sst, para, sts):
    return {"sst": sst, "para": para, "sts": sts, "score": (sst + para + (sts + 1) / 2) / 3}


def test_cell_record_keeps_the_trainers_best_epoch_and_the_table_subtracts_base(tmp_path):
    _write_metrics(tmp_path / "base", [_dev(0.40, 0.80, 0.80), _dev(0.50, 0.82, 0.86)], best_epoch=2)
    pcgrad = {"pcgrad": {"steps_by_tasks": {"2": 3}, "pairs": {"para/sst": {"steps": 3, "conflicting": 0.5}}}}
    _write_metrics(tmp_path / "lever", [_dev(0.52, 0.84, 0.88), _dev(0.51, 0.80, 0.80)], best_epoch=1, logged=pcgrad)
    base = levers.cell_record("base", [], 1, tmp_path / "base", 1.0)
    lever = levers.cell_record("lever", ["--x", "1"], 1, tmp_path / "lever", 1.0)
    assert base["technique_metrics"] == [{}, {}] and lever["technique_metrics"] == [pcgrad, pcgrad]
    assert base["kept_epoch"] == 2 and base["kept"]["sst"] == 0.50 and base["seconds"] == 10.0
    assert lever["kept_epoch"] == 1 and len(lever["epochs"]) == 2
    rows = {r["arm"]: r for r in levers.summarize([base, lever], ["base", "lever"])}
    assert rows["lever"]["delta"]["sst"] == pytest.approx(0.02)
    assert rows["lever"]["delta"]["sts"] == pytest.approx(0.02)
    assert rows["lever"]["delta"]["score"] == pytest.approx(lever["kept"]["score"] - base["kept"]["score"])
    levers.write_table(list(rows.values()), tmp_path, "header")
    table = (tmp_path / "table.md").read_text()
    assert "| lever | `--x 1` | 1 | 0.5200 (+0.0200) |" in table


def test_a_run_with_no_finished_evaluation_is_a_clear_error(tmp_path):
    (tmp_path / "cell").mkdir()
    (tmp_path / "cell" / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "step": 3, "dev": _dev(.1, .5, .1)}) + "\n")
    with pytest.raises(RuntimeError, match="no finished run"):
        levers.cell_record("base", [], 1, tmp_path / "cell", 1.0)


def test_unknown_arm_names_the_known_ones(capsys):
    with pytest.raises(SystemExit, match="unknown arm 'nope'; known: base, lld_0.9"):
        levers.main(["--arms", "base", "nope"])


def test_an_arm_defined_with_arm_can_be_named_in_arms(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="unknown arm 'nope'; known: .*, fast2"):
        levers.main(["--arms", "nope", "--arm", "fast2", "--lr 2e-4", "--out_dir", str(tmp_path)])

    class Started(Exception):
        pass

    def first_cell(cmd, **kwargs):
        raise Started(cmd)
    monkeypatch.setattr(levers.subprocess, "run", first_cell)
    with pytest.raises(Started) as started:  # only --arm's fast2 runs: no default arm before it
        levers.main(["--arms", "fast2", "--arm", "fast2", "--lr 2e-4 --head_lr 2e-3", "--out_dir", str(tmp_path)])
    cmd = started.value.args[0]
    assert cmd[cmd.index("--out_dir") + 1].endswith("fast2-s11711") and "--head_lr" in cmd


def test_a_task_the_arm_did_not_train_is_a_dash_not_a_crash(tmp_path):
    _write_metrics(tmp_path / "c", [{"sst": 0.5, "score": 0.5}], best_epoch=1)
    rows = levers.summarize([levers.cell_record("base", [], 1, tmp_path / "c", 1.0)], ["base"])
    levers.write_table(rows, tmp_path, "header")
    assert "| base | `(the defaults)` | 1 | 0.5000 | — | — | 0.5000 |" in (tmp_path / "table.md").read_text()


def _fake_cell(calls):
    """A stand-in for the multitask CLI: records the command, writes a finished cell's metrics."""
    def run(cmd, **kw):
        calls.append(cmd)
        _write_metrics(Path(cmd[cmd.index("--out_dir") + 1]) / "m", [_dev(0.5, 0.8, 0.8)], best_epoch=1)
        out = Path(cmd[cmd.index("--out_dir") + 1])
        (out / "metrics.jsonl").write_text((out / "m" / "metrics.jsonl").read_text())
    return run


def test_an_interrupted_cell_resumes_and_another_budget_is_refused(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", _fake_cell(calls))
    (tmp_path / "lv" / "base-s11711").mkdir(parents=True)
    (tmp_path / "lv" / "base-s11711" / "last.safetensors").write_bytes(b"")  # a checkpoint from a killed run
    levers.main(["--arms", "base", "msd_4", "--epochs", "1", "--out_dir", str(tmp_path / "lv")])
    assert calls[0][-1] == "--resume" and "--resume" not in calls[1]
    assert calls[1][calls[1].index("--epochs") + 1] == "1" and "--head_dropout_samples" in calls[1]
    with pytest.raises(SystemExit, match="another --out_dir"):
        levers.main(["--arms", "base", "--epochs", "3", "--out_dir", str(tmp_path / "lv")])
    with pytest.raises(SystemExit, match="ran with"):
        levers.main(["--arms", "base", "--epochs", "1", "--out_dir", str(tmp_path / "lv"), "--arm", "base", "--x 1"])


def _in_this_process(cmd, check, cwd, env):
    """A cell's command run here as `python SCRIPT ARGS` would run it: the script as __main__ with its argv
    (a fresh interpreter's imports are most of a tiny cell's cost); a failing cell raises, as check=True."""
    assert cmd[:2] == [sys.executable, str(levers.ROOT / "tasks" / "multitask.py")] and check and cwd == levers.ROOT
    argv, path = sys.argv, list(sys.path)
    sys.argv = cmd[1:]
    try:
        runpy.run_path(cmd[1], run_name="__main__")
    finally:
        sys.argv, sys.path[:] = argv, path


def test_two_arms_end_to_end_then_a_rerun_reads_them_back(tiny_checkpoint, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "run", _in_this_process)
    extra = f"--model {tiny_checkpoint} --data_dir {tiny_data} --max_examples 8 --batch_size 4"
    argv = ["--arms", "base", "msd_4", "--epochs", "1", "--out_dir", str(tmp_path / "lv"), "--extra", extra]
    levers.main(argv)
    records = [json.loads(line) for line in (tmp_path / "lv" / "results.jsonl").read_text().splitlines()]
    assert [r["arm"] for r in records] == ["base", "msd_4"]
    assert records[1]["flags"] == ["--head_dropout_samples", "4"]
    assert records[0]["technique_metrics"] == [{}]  # one evaluation, no technique that logs
    config = json.loads((tmp_path / "lv" / "msd_4-s11711" / "run_config.json").read_text())
    assert config["head_dropout_samples"] == 4 and config["epochs"] == 1

    def no_subprocess(*a, **k):
        raise AssertionError("a finished cell ran again")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    levers.main(argv)  # both cells are in results.jsonl: nothing runs, the table is written again
    assert "| msd_4 |" in (tmp_path / "lv" / "table.md").read_text()


def test_the_table_gives_the_paired_interval_of_the_overall_score_against_base(tmp_path):
    from tasks.studies.stats import paired_interval
    records = []
    for seed, (b, x) in enumerate([(0.40, 0.43), (0.50, 0.52), (0.45, 0.49)], start=1):
        for arm, sst in (("base", b), ("lever", x)):
            _write_metrics(tmp_path / f"{arm}{seed}", [_dev(sst, 0.8, 0.8)], best_epoch=1)
            records.append(levers.cell_record(arm, [], seed, tmp_path / f"{arm}{seed}", 1.0))
    rows = {r["arm"]: r for r in levers.summarize(records, ["base", "lever"])}
    # the overall score moves by a third of SST's difference: +0.01, +0.00667, +0.01333, all above 0
    by_hand = paired_interval({s: (x + 0.8 + 0.9) / 3 for s, x in ((1, .43), (2, .52), (3, .49))},
                              {s: (b + 0.8 + 0.9) / 3 for s, b in ((1, .40), (2, .50), (3, .45))})
    assert rows["lever"]["paired"]["lo"] == pytest.approx(by_hand["lo"]) and by_hand["lo"] > 0
    assert rows["lever"]["verdict"] == "helps" and rows["base"]["verdict"] == ""
    levers.write_table(list(rows.values()), tmp_path, "header")
    line = next(x for x in (tmp_path / "table.md").read_text().splitlines() if x.startswith("| lever |"))
    assert f"[{by_hand['lo']:+.4f}, {by_hand['hi']:+.4f}] | helps |" in line
    levers.write_chart(list(rows.values()), tmp_path)
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"


def test_no_chart_without_an_arm_to_compare_with_base(tmp_path):
    _write_metrics(tmp_path / "base1", [_dev(0.4, 0.8, 0.8)], best_epoch=1)
    records = [levers.cell_record("base", [], 1, tmp_path / "base1", 1.0)]
    levers.write_chart(levers.summarize(records, ["base"]), tmp_path)
    assert not (tmp_path / "chart.png").exists()


def test_the_table_says_held_out_rows_only_when_the_cells_select_on_them():
    assert levers.scored_on("--select_on heldout") == "held-out training"
    assert levers.scored_on("--use_gpu --select_on=heldout") == "held-out training"
    assert levers.scored_on("") == "dev"
    assert levers.scored_on("--heldout_fraction 0.2") == "dev"  # a fraction alone selects nothing
