"""The ablation runner: technique combinations, the summary statistics, the written tables and chart, and
--resume skipping finished cells, on a tiny random BERT."""
import csv
import json

import numpy as np
import pytest

from tasks import ablate


def test_techniques_combine_and_conflicts_are_errors():
    phases, flags, what = ablate.technique_args("dae+cat+child_d")
    assert phases == ("dae",) and flags == ("--adversarial", "--child_tuning", "D") and "+" in what
    assert ablate.technique_args("contrastive+dae")[0] == ("dae", "contrastive")  # the paper's order
    for bad in ("child_f+child_d", "dae+mlm", "dropout"):
        with pytest.raises(ValueError):
            ablate.technique_args(bad)


def test_summary_is_mean_and_sample_sd_against_plain():
    rng = np.random.default_rng(0)
    records = [{"technique": t, "seed": s, "score": float(rng.random()), "wall_seconds": 10.0 + s,
                "extra_epochs": 1 if t == "dae" else 0} for t in ("plain", "dae") for s in range(4)]
    rows = {r["technique"]: r for r in ablate.summarize(records, ["plain", "dae", "cat"])}
    assert set(rows) == {"plain", "dae"}  # no cells, no row
    plain = [r["score"] for r in records[:4]]
    dae = [r["score"] for r in records[4:]]
    assert rows["dae"]["mean"] == pytest.approx(np.mean(dae)) and rows["dae"]["sd"] == pytest.approx(np.std(dae, ddof=1))
    assert rows["dae"]["delta"] == pytest.approx(np.mean(dae) - np.mean(plain)) and rows["plain"]["delta"] == 0.0
    assert rows["dae"]["n"] == 4 and rows["dae"]["wall_seconds"] == pytest.approx(11.5)


def test_fewer_than_three_seeds_is_refused(capsys):
    with pytest.raises(SystemExit):
        ablate.parse_args(["--seeds", "1", "2"])
    assert "at least 3" in capsys.readouterr().err


def _tiny_grid(tiny_checkpoint, tiny_data, out, epochs, max_examples, *rest):
    """An ablation command on the tiny checkpoint and data: SST, seeds 1-3, batch 8."""
    return ["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--task", "sst", "--seeds", "1", "2", "3",
            "--epochs", str(epochs), "--batch_size", "8", "--max_examples", str(max_examples), "--out_dir", str(out),
            *rest]


@pytest.mark.filterwarnings("ignore:.*no checkpoint at")
def test_grid_writes_tables_and_resume_skips_finished_cells(tiny_checkpoint, tiny_data, tmp_path):
    out = tmp_path / "ablate"
    base = _tiny_grid(tiny_checkpoint, tiny_data, out, 1, 16)
    ablate.main(base + ["--techniques", "plain", "dae", "child_f"])
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["technique"], r["seed"]) for r in records) == sorted(
        (t, s) for t in ("plain", "dae", "child_f") for s in (1, 2, 3))
    assert {r["technique"]: r["extra_epochs"] for r in records} == {"plain": 0, "dae": 6, "child_f": 0}
    with open(out / "table.csv", newline="") as f:
        table = {row["technique"]: row for row in csv.DictReader(f)}
    for name, row in table.items():
        scores = [r["score"] for r in records if r["technique"] == name]
        assert float(row["mean_accuracy"]) == pytest.approx(np.mean(scores), abs=1e-6)
        assert float(row["sd_accuracy"]) == pytest.approx(np.std(scores, ddof=1), abs=1e-6)
    md = (out / "table.md").read_text()
    assert all(f"| {name} |" in md for name in table) and "±" in md and "python tasks/ablate.py" in md
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.rglob("*.pt"))  # checkpoints are removed once a cell is done
    assert [p.name for p in (out / "plain-seed1" / "predictions").iterdir()] == ["sst-dev-output.csv"]  # dev only

    with pytest.raises(SystemExit, match="--resume"):
        ablate.main(base + ["--techniques", "plain"])
    ablate.main(base + ["--techniques", "plain", "dae", "child_f", "cat", "--resume"])
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines[:9]] == records  # finished cells untouched, not rerun
    assert sorted(json.loads(line)["technique"] for line in lines[9:]) == ["cat"] * 3
    with pytest.raises(SystemExit, match="budget"):
        ablate.main([*base[:-2], "--lr", "1e-3", "--out_dir", str(out), "--resume"])


def test_held_out_rows_are_fixed_disjoint_and_the_given_share():
    from tasks.domain.data import hold_out
    rows = list(range(100))
    rest, held = hold_out(rows, 0.1)
    assert len(held) == 10 and sorted(rest + held) == rows and hold_out(rows, 0.1) == (rest, held)
    with pytest.raises(ValueError):
        hold_out(rows, 1.0)


@pytest.mark.filterwarnings("ignore:.*no checkpoint at")
def test_fair_protocol_tunes_each_arms_lr_on_held_out_rows_then_reports_dev_with_paired_intervals(
        tiny_checkpoint, tiny_data, tmp_path):
    out = tmp_path / "fair"
    ablate.main(_tiny_grid(tiny_checkpoint, tiny_data, out, 2, 24, "--techniques", "plain", "child_f",
                           "--select_on", "heldout", "--lr_grid", "1e-4", "1e-3"))
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    tune = [r for r in records if r["stage"] == "tune"]
    assert sorted((r["technique"], r["lr"]) for r in tune) == [(t, lr) for t in ("child_f", "plain") for lr in (1e-4, 1e-3)]
    assert {r["seed"] for r in tune} == {4}  # a seed of its own, not one of the reported ones
    for technique in ("plain", "child_f"):
        chosen = max((r for r in tune if r["technique"] == technique), key=lambda r: r["selection"])["lr"]
        assert {r["lr"] for r in records if r["stage"] == "main" and r["technique"] == technique} == {chosen}
    with open(out / "table.csv", newline="") as f:
        row = {r["technique"]: r for r in csv.DictReader(f)}["child_f"]
    main = {(r["technique"], r["seed"]): r["score"] for r in records if r["stage"] == "main"}
    d = [main[("child_f", s)] - main[("plain", s)] for s in (1, 2, 3)]
    assert float(row["delta_vs_plain"]) == pytest.approx(np.mean(d), abs=1e-6)
    assert row["verdict"] in ("helps", "harms", "no difference shown")
    assert "held-out training rows" in (out / "table.md").read_text()
    # the epoch was chosen on the held-out rows: the cell's metrics hold their scores, not dev's
    metrics = [json.loads(x) for x in (out / "plain-seed1" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["final"] and metrics[-1]["dev"]["sst"] == main[("plain", 1)]


def test_tuning_points_cross_the_lr_with_only_the_arms_own_flags():
    grid = {"adv_epsilon": ["0.3", "1"], "child_tuning_p": ["0.1", "0.3"]}
    assert ablate.tuning_points("plain", [1e-4, 2e-4], grid, 1e-4) == [(1e-4, {}), (2e-4, {})]
    assert ablate.tuning_points("cat", None, grid, 5e-5) == [(5e-5, {"adv_epsilon": "0.3"}), (5e-5, {"adv_epsilon": "1"})]
    points = ablate.tuning_points("child_d+cat", [1e-4], grid, 1e-4)
    assert len(points) == 4 and {"adv_epsilon": "1", "child_tuning_p": "0.1"} in [p for _, p in points]


def test_a_tune_grid_flag_no_technique_declares_is_refused(capsys):
    with pytest.raises(SystemExit):
        ablate.parse_args(["--select_on", "heldout", "--tune_grid", "adv_epsilonn=0.3,1"])
    assert "adv_epsilon" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablate.parse_args(["--tune_grid", "adv_epsilon=0.3,1"])  # dev must not choose
    assert "never on dev" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a switch takes no value: refused when parsing, not hours into the grid
        ablate.parse_args(["--select_on", "heldout", "--tune_grid", "pcgrad=1,0"])
    assert "--pcgrad 1 is not a valid setting" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:.*no checkpoint at")
def test_tune_grid_chooses_a_techniques_own_flag_on_held_out_rows_and_the_seeds_use_it(
        tiny_checkpoint, tiny_data, tmp_path):
    out = tmp_path / "grid"
    ablate.main(_tiny_grid(tiny_checkpoint, tiny_data, out, 1, 24, "--techniques", "plain", "child_f",
                           "--select_on", "heldout", "--tune_grid", "child_tuning_p=0.2,0.9"))
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    tune = [r for r in records if r["stage"] == "tune"]
    assert [(r["technique"], r["params"]) for r in tune] == [("child_f", {"child_tuning_p": "0.2"}),
                                                             ("child_f", {"child_tuning_p": "0.9"})]
    best = max(tune, key=lambda r: r["selection"])["params"]
    main = [r for r in records if r["stage"] == "main"]
    assert {json.dumps(r["params"]) for r in main if r["technique"] == "child_f"} == {json.dumps(best)}
    assert all(r["params"] == {} for r in main if r["technique"] == "plain")
    config = json.loads((out / "child_f-seed1" / "run_config.json").read_text())
    assert config["child_tuning_p"] == float(best["child_tuning_p"])
    assert f"child_tuning_p {best['child_tuning_p']}" in (out / "table.md").read_text()


def test_a_grid_from_before_a_flag_existed_still_resumes(tiny_checkpoint, tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "old"
    argv = _tiny_grid(tiny_checkpoint, tiny_data, out, 1, 16, "--techniques", "plain")
    ablate.main(argv)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    for r in records:  # as an older version wrote them: no tuned params, no --average_evaluations in the budget
        del r["params"], r["budget"]["average_evaluations"]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.setattr(ablate, "run", lambda *a, **k: pytest.fail("a finished cell ran again"))
    rows = ablate.main(argv + ["--resume"])
    assert rows[0]["technique"] == "plain" and rows[0]["n"] == 3
