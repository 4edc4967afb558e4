"""tasks/studies: the one study runner (cells, results.jsonl, budget, resume), the paired statistics every study
reports, and the table and chart they write. The studies themselves run tiny grids through it in test_ablate,
test_levers and test_gan_cli."""
import json

import numpy as np
import pytest

from tasks.studies.report import markdown_table, paired_chart
from tasks.studies.runner import Study
from tasks.studies.stats import compare, paired_interval, verdict


def test_paired_interval_and_verdict_by_hand():
    from scipy.stats import t
    a, b = {1: 0.50, 2: 0.52, 3: 0.49}, {1: 0.47, 2: 0.495, 3: 0.462, 4: 0.9}  # seed 4 has no pair: left out
    d = np.array([0.03, 0.025, 0.028])
    half = t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    got = paired_interval(a, b)
    assert got["n"] == 3 and got["lo"] == pytest.approx(d.mean() - half) and got["hi"] == pytest.approx(d.mean() + half)
    assert verdict(got) == "helps" and verdict({"lo": -0.1, "hi": 0.1}) == "no difference shown"
    assert verdict({"lo": -0.3, "hi": -0.1}) == "harms" and verdict(paired_interval({1: 0.5}, {1: 0.4})) == "too few seeds"


def _cells(seeds=(1, 2, 3), arms=("base", "x")):
    return [{"arm": a, "seed": s} for s in seeds for a in arms]


def test_a_study_runs_each_cell_once_and_a_rerun_continues(tmp_path):
    ran, seen = [], []

    def run_cell(cell):
        ran.append((cell["arm"], cell["seed"]))
        return {"score": cell["seed"] / 10 + (0.05 if cell["arm"] == "x" else 0.0)}

    study = Study(tmp_path, key=("arm", "seed"), budget={"epochs": 1})
    got = study.run(_cells(seeds=(1, 2)), run_cell, after=lambda records: seen.append(len(records)))
    assert ran == [("base", 1), ("x", 1), ("base", 2), ("x", 2)] and seen == [1, 2, 3, 4]
    assert [r["score"] for r in got] == pytest.approx([0.1, 0.15, 0.2, 0.25])
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert lines == got and all(r["budget"] == {"epochs": 1} for r in lines)

    with pytest.raises(SystemExit, match="--resume"):  # a finished grid is not continued by accident
        Study(tmp_path, key=("arm", "seed"), budget={"epochs": 1})
    with pytest.raises(SystemExit, match="another budget"):
        Study(tmp_path, key=("arm", "seed"), budget={"epochs": 2}, resume=True)
    ran.clear()
    study = Study(tmp_path, key=("arm", "seed"), budget={"epochs": 1}, resume=True)
    study.run(_cells(), run_cell)
    assert ran == [("base", 3), ("x", 3)]  # only the new seed's cells
    assert [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()][:4] == lines


def test_a_kill_inside_a_cell_loses_only_that_cell(tmp_path):
    def dies_on_the_third(cell):
        if cell == {"arm": "base", "seed": 2}:
            raise KeyboardInterrupt
        return {"score": 0.5}

    with pytest.raises(KeyboardInterrupt):
        Study(tmp_path, key=("arm", "seed")).run(_cells(), dies_on_the_third)
    ran = []
    Study(tmp_path, key=("arm", "seed"), resume=True).run(_cells(), lambda c: ran.append(c) or {"score": 0.5})
    assert ran[0] == {"arm": "base", "seed": 2} and len(ran) == 4


def test_old_records_get_the_key_and_budget_defaults_and_a_legacy_file_is_read(tmp_path):
    old = {"technique": "plain", "seed": 1, "score": 0.4, "budget": {"lr": 1e-4}}  # before stage and --new existed
    (tmp_path / "results.jsonl").write_text(json.dumps(old) + "\n")
    study = Study(tmp_path, key=("technique", "seed", "stage"), budget={"lr": 1e-4, "new": 3}, resume=True,
                  key_defaults={"stage": "main"}, budget_defaults={"new": 3})
    assert study.find({"technique": "plain", "seed": 1, "stage": "main"})["score"] == 0.4
    assert study.find({"technique": "plain", "seed": 1, "stage": "tune"}) is None
    with pytest.raises(SystemExit, match="another budget"):  # ran at another default than this grid's value
        Study(tmp_path, key=("technique", "seed"), budget={"lr": 1e-4, "new": 4}, resume=True, budget_defaults={"new": 3})

    legacy = Study(tmp_path / "csv", key=("arm", "seed"), resume=True, legacy=lambda: [{"arm": "a", "seed": 1}])
    assert legacy.find({"arm": "a", "seed": 1}) is not None


def test_compare_pairs_seeds_against_each_arms_baseline():
    records = [{"arm": a, "seed": s, "acc": v, "loss": 1 - v} for a, vals in
               (("base", (0.40, 0.50, 0.45)), ("x", (0.43, 0.52, 0.49)), ("y", (0.41, None, 0.44))) for s, v in
               zip((1, 2, 3), vals) if v is not None]
    rows = {r["arm"]: r for r in compare(records, arm=lambda r: r["arm"],
                                         metrics={"acc": lambda r: r["acc"], "loss": lambda r: r["loss"]},
                                         baseline=lambda a: "base", order=["base", "x", "y", "z"])}
    assert list(rows) == ["base", "x", "y"]
    assert rows["base"]["delta"] == {"acc": 0.0, "loss": 0.0} and rows["base"]["verdict"] == ""
    x = rows["x"]
    assert x["mean"]["acc"] == pytest.approx(np.mean([0.43, 0.52, 0.49]))
    assert x["sd"]["acc"] == pytest.approx(np.std([0.43, 0.52, 0.49], ddof=1))
    assert x["diffs"]["acc"] == pytest.approx([0.03, 0.02, 0.04]) and x["diffs"]["loss"] == pytest.approx([-.03, -.02, -.04])
    assert x["paired"] == paired_interval({1: .43, 2: .52, 3: .49}, {1: .40, 2: .50, 3: .45}) and x["verdict"] == "helps"
    assert rows["y"]["paired"]["n"] == 2 and rows["y"]["diffs"]["acc"] == pytest.approx([0.01, -0.01])  # seed 2 missing
    # Δ is over the seeds both have, as the interval is: not mean(y) − mean(base), which would add base's seed 2
    assert rows["y"]["delta"]["acc"] == pytest.approx(rows["y"]["paired"]["mean"])
    assert rows["y"]["delta"]["acc"] == pytest.approx(0.0)
    apart = compare(records + [{"arm": "z", "seed": 9, "acc": 0.5, "loss": 0.5}], arm=lambda r: r["arm"],
                    metrics={"acc": lambda r: r["acc"]}, baseline=lambda a: "base")
    z = [r for r in apart if r["arm"] == "z"][0]  # no seed in common with base: no Δ, no interval
    assert z["delta"] is None and z["diffs"] == {"acc": []} and z["verdict"] == "too few seeds"
    alone = compare(records, arm=lambda r: r["arm"], metrics={"acc": lambda r: r["acc"]}, baseline=lambda a: None)
    assert all(r["delta"] is None and r["verdict"] == "" for r in alone)


def test_the_table_and_the_chart(tmp_path):
    text = markdown_table("title", ["arm", "score"], [["x", "0.5000"]], right=[False, True])
    assert text == "title\n\n| arm | score |\n| --- | ---: |\n| x | 0.5000 |\n"
    records = [{"arm": a, "seed": s, "acc": 0.4 + 0.01 * s + (0.02 if a == "x" else 0)} for a in ("base", "x")
               for s in (1, 2, 3)]
    rows = compare(records, arm=lambda r: r["arm"], metrics={"acc": lambda r: r["acc"]}, baseline=lambda a: "base")
    assert paired_chart(rows, tmp_path / "chart.png", ["acc"])
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"
    assert not paired_chart(rows[:1], tmp_path / "none.png", ["acc"]) and not (tmp_path / "none.png").exists()
