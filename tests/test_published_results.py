"""The README's full-scale verdicts and docs/techniques.md's per-seed tables, recomputed from the records the
grids wrote (docs/results/).

Each row of the README's techniques table rests on one grid's records, one line per finished cell. This test
recomputes the row's figures from those records with the statistics every study uses (tasks/studies/stats.py)
and checks that the row prints them at its three decimals, so a figure edited by hand, a record changed after
the fact, or a change to the statistics shows up here; and each arm's row of seeds in docs/techniques.md must
print the records' scores and their mean ± sd at four decimals. The two multitask rows (CAT on the SST batches, the
shorter default run) are not covered: they pair against the default runs of session 7, which predate these
records (docs/results.md has their figures).
"""
from functools import partial
from pathlib import Path

import pytest

from gan.study import read_legacy_csv
from tasks.engine.checkpointing import read_jsonl
from tasks.studies import stats

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "docs" / "results"


def signed(x: float) -> str:
    """+0.017 / −0.012, as the README prints them (a true minus sign)."""
    return f"{x:+.3f}".replace("-", "\u2212")


def interval(p: dict) -> str:
    return f"[{signed(p['lo'])}, {signed(p['hi'])}]"


def bold_if_helps(p: dict) -> str:
    """A Δ as the README prints it: in bold where its interval excludes zero in its favour."""
    return f"**{signed(p['mean'])}**" if stats.verdict(p) == "helps" else signed(p["mean"])


def readme_row(first_cell: str) -> str:
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, f"README.md: expected one table row starting {first_cell!r}, found {len(rows)}"
    return rows[0]


def ablate_scores(grid: str, technique: str) -> dict:
    """{seed: dev score} of a technique's reported cells (stage "main"; the tuning cells are on their own seed)."""
    return {r["seed"]: r["score"] for r in read_jsonl(RECORDS / grid / "results.jsonl")
            if r["stage"] == "main" and r["technique"] == technique}


def gan_scores(method: str, fraction: float) -> dict:
    return {r["seed"]: float(r["dev_accuracy"]) for r in read_legacy_csv(RECORDS / "s12-gan-ft" / "results.csv")
            if r["method"] == method and r["labeled_fraction"] == fraction}


def average(scores: dict) -> float:
    return stats.mean_sd(list(scores.values()))[0]


def mean(scores: dict) -> str:
    return f"{average(scores):.3f}"


@pytest.mark.parametrize("row, grid, technique, name, seeds", [
    ("contrastive adversarial training (CAT), SST-5 alone", "s10-sst-full", "cat", "CAT", 5),
    ("CAT on CFIMDB alone (binary, long reviews)", "s16-cfimdb-full", "cat", "CAT", 5),
    ("DAE → contrastive → fine-tune", "s14-sst-full-phases", "3phase", "3phase", 3),
    ("DAE → contrastive → fine-tune on CFIMDB", "s17-cfimdb-phases", "3phase", "3phase", 3),
])
def test_fine_tuned_rows(row, grid, technique, name, seeds):
    plain, arm = ablate_scores(grid, "plain"), ablate_scores(grid, technique)
    assert len(plain) == len(arm) == seeds and set(plain) == set(arm), f"{grid}: the seeds of plain and {technique}"
    p = stats.paired_interval(arm, plain)
    text = readme_row(row)
    assert f"{bold_if_helps(p)} {interval(p)}" in text, text
    assert f"{seeds} seeds (plain {mean(plain)}, {name} {mean(arm)})" in text, text
    assert (stats.verdict(p) == "helps") == ("**yes**" in text), text


@pytest.mark.parametrize("row, frozen, fine_tuned", [
    ("the contrastive phase + a head on the frozen encoder (the paper's setting)", "s15-sst-full-frozen",
     "s14-sst-full-phases"),
    ("the same on CFIMDB, frozen encoder", "s18-cfimdb-frozen", "s17-cfimdb-phases"),
])
def test_frozen_rows(row, frozen, fine_tuned):
    """Each frozen arm against the frozen head on the same seeds, and the fine-tuned grid's plain arm beside them."""
    head, contrastive, three = (ablate_scores(frozen, t) for t in ("plain", "contrastive", "3phase"))
    plain_fine_tuned = ablate_scores(fine_tuned, "plain")
    assert set(head) == set(contrastive) == set(three) == set(plain_fine_tuned) and len(head) == 3
    c, t = stats.paired_interval(contrastive, head), stats.paired_interval(three, head)
    text = readme_row(row)
    assert f"{bold_if_helps(c)} {interval(c)}, 3 seeds (frozen head {mean(head)}, contrastive {mean(contrastive)})" in text
    assert f"DAE first: {bold_if_helps(t)} {interval(t)} ({mean(three)})" in text
    assert f"plain fine-tuning ({mean(plain_fine_tuned)})" in text
    if "below plain fine-tuning" in text:
        assert max(average(contrastive), average(three)) < average(plain_fine_tuned)
    if "level with plain fine-tuning" in text:  # neither frozen arm differs from it, seed by seed
        assert all(stats.verdict(stats.paired_interval(arm, plain_fine_tuned)) == "no difference shown"
                   for arm in (contrastive, three))
    assert ("**yes**" in text) == (stats.verdict(c) == "helps" or stats.verdict(t) == "helps"), text


def test_gan_rows():
    plain = {f: gan_scores("plain", f) for f in (0.01, 0.05, 0.1)}
    ac = {f: stats.paired_interval(gan_scores("acganbert", f), plain[f]) for f in plain}
    gb = {f: stats.paired_interval(gan_scores("ganbert", f), plain[f]) for f in plain}
    assert all(p["n"] == 5 for p in [*ac.values(), *gb.values()])
    text = readme_row("AC-GAN-BERT, 5% labelled, rest unlabelled")
    assert f"{signed(ac[0.05]['mean'])} {interval(ac[0.05])} fine-tuned" in text
    assert f"(1%: {signed(ac[0.01]['mean'])}, 10%: {signed(ac[0.1]['mean'])})" in text
    assert not any(stats.verdict(p) == "helps" for p in ac.values())
    text = readme_row("GAN-BERT, same setting")
    assert f"**{signed(gb[0.05]['mean'])}** {interval(gb[0.05])} at 5%" in text
    assert f"1%: {signed(gb[0.01]['mean'])}, 10%: {signed(gb[0.1]['mean'])}" in text
    assert [stats.verdict(gb[f]) for f in (0.01, 0.05, 0.1)] == ["no difference shown", "helps", "no difference shown"]


def seed_cells(scores: dict) -> str:
    """An arm's per-seed cells as docs/techniques.md prints them: each seed's score, then mean ± sd."""
    m, sd = stats.mean_sd(list(scores.values()))
    return "| " + " | ".join(f"{scores[s]:.4f}" for s in sorted(scores)) + f" | {m:.4f} ± {sd:.4f} |"


@pytest.mark.parametrize("scores", [
    *[pytest.param(partial(ablate_scores, grid, t), id=f"{grid}-{t}") for grid, arms in [
        ("s10-sst-full", ("plain", "cat")), ("s14-sst-full-phases", ("plain", "3phase")),
        ("s15-sst-full-frozen", ("plain", "contrastive", "3phase")), ("s16-cfimdb-full", ("plain", "cat")),
        ("s17-cfimdb-phases", ("plain", "3phase")), ("s18-cfimdb-frozen", ("plain", "contrastive", "3phase"))]
      for t in arms],
    *[pytest.param(partial(gan_scores, m, f), id=f"gan-{m}-{f}") for f in (0.01, 0.05, 0.1)
      for m in ("plain", "ganbert", "acganbert")],
])
def test_per_seed_tables(scores):
    values = scores()
    assert len(values) >= 3
    assert seed_cells(values) in (ROOT / "docs" / "techniques.md").read_text(), seed_cells(values)
