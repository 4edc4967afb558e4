"""End to end: gan/train.py, gan/study.py and gan/embeddings.py on a tiny random BERT and 32 rows per file."""
import csv
import json

import pytest

from gan import embeddings, study, train
from gan.data import semi_supervised
from minibert import Tokenizer
from tasks.launch.run import task_files

TINY = ["--batch_size", "8", "--lr", "1e-3", "--noise_dim", "8"]


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _data_ids(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [r["id"] for r in csv.DictReader(f, delimiter="\t")]


def test_train_cli_writes_metrics_predictions_and_curves(tiny_checkpoint, tiny_data, tmp_path):
    results = train.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--epochs", "2", *TINY,
                          "--labeled_fraction", "0.25", "--tasks", "sst", "cfimdb", "--out_dir", str(tmp_path / "run"),
                          "--predictions_dir", str(tmp_path / "pred")])
    for task, prefix, k in (("sst", "ids-sst", 5), ("cfimdb", "ids-cfimdb", 2)):
        run = tmp_path / "run" / f"{task}-acganbert"
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r.get("epoch") for r in records[:2]] == [1, 2] and records[-1]["final"] is True
        assert {"d", "g", "d_sup", "d_real", "d_fake", "g_adv", "g_feat", "aux"} <= set(records[0]["train_loss"])
        for r in records[:2]:  # every evaluation reads the fakes against the current encoder's real dev embeddings
            assert r["dev"]["fakes"]["chance"] == pytest.approx(1 / k) and 0 <= r["dev"]["fakes"]["probe_acc"] <= 1
        assert records[-1]["dev_accuracy"] == pytest.approx(results[task]["dev_accuracy"])
        assert max(r["dev"]["score"] for r in records[:2]) == pytest.approx(results[task]["dev_accuracy"])
        assert (run / "curves.png").stat().st_size > 1000 and (run / "best.safetensors").is_file()
        for split, data_split in (("dev", "dev"), ("test", "test-student")):
            preds = _rows(tmp_path / "pred" / f"{task}-{split}-output.csv")
            assert [p["id"] for p in preds] == _data_ids(tiny_data / f"{prefix}-{data_split}.csv")
            assert {int(p["Predicted_Sentiment"]) for p in preds} <= set(range(k))
    model, meta = train.load_checkpoint(tmp_path / "run" / "sst-acganbert" / "best.safetensors")
    assert meta["gan"]["method"] == "acganbert" and model.generate(3)[0].shape == (3, 32)


def test_every_method_gets_the_same_number_of_steps(tiny_checkpoint, tiny_data):
    args = train.parse_args(["--data_dir", str(tiny_data)])
    tok, files = Tokenizer.from_pretrained(tiny_checkpoint), task_files(args, "sst", "sst")
    procs = {m: semi_supervised("sst", tok, files, 0.2, 1.0, m, seed=1, batch_size=4) for m in ("plain", "ganbert", "acganbert")}
    steps = {m: p.num_batches() for m, p in procs.items()}
    assert len(set(steps.values())) == 1, steps
    gan = procs["ganbert"]
    assert gan.stats["labeled"] + gan.stats["unlabeled"] == 32 and gan.stats["replicate"] == 2
    assert len(gan.splits["train"]) == 2 * gan.stats["labeled"] + gan.stats["unlabeled"]
    assert all(e.label is not None for e in procs["plain"].splits["train"])
    assert sum(e.label is None for e in gan.splits["train"]) == gan.stats["unlabeled"]
    batches = list(procs["plain"].batches(0))
    assert all(b["label_mask"].all() for b in batches)


def test_study_cli_writes_csv_and_plot_and_resume_skips_finished_cells(tiny_checkpoint, tiny_data, tmp_path, capsys):
    argv = ["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--epochs", "1", *TINY,
            "--fractions", "0.5", "1", "--unlabeled", "1", "--seeds", "1", "--out_dir", str(tmp_path)]
    study.main(argv)
    rows = _records(tmp_path / "results.jsonl")
    assert len(rows) == 6 and {r["method"] for r in rows} == {"plain", "ganbert", "acganbert"}
    for f in (0.5, 1.0):
        assert len({r["steps_per_epoch"] for r in rows if r["labeled_fraction"] == f}) == 1  # the same budget
    assert all(0.0 <= float(r["dev_accuracy"]) <= 1.0 for r in rows)
    assert (tmp_path / "study-sst.png").stat().st_size > 1000 and len(_rows(tmp_path / "summary.csv")) == 6
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"  # the runner's paired chart: each GAN against plain
    assert not list(tmp_path.glob("cells/*/best.*"))  # checkpoints dropped once a cell is recorded
    for r in rows:  # the fakes' probe at the kept epoch, in the fine-tuned encoder's space: GANs only
        if r["method"] == "plain":
            assert r.get("probe_acc") is None and r.get("spread") is None
            continue
        log = [json.loads(x) for x in (tmp_path / "cells" / study.cell_name(r) / "metrics.jsonl").read_text().splitlines()]
        kept = next(h for h in log if h.get("epoch") == int(r["best_epoch"]) and "dev" in h and "fakes" in h["dev"])
        conditional = r["method"] == "acganbert"  # GAN-BERT's G has no class to read back
        for c in ("spread", "coverage", *(("probe_acc", "class_coverage") if conditional else ())):
            assert float(r[c]) == pytest.approx(kept["dev"]["fakes"][c]), c

    with pytest.raises(SystemExit, match="--resume"):
        study.main(argv)
    capsys.readouterr()
    study.main(argv[:-4] + ["--seeds", "1", "2", "--out_dir", str(tmp_path), "--resume", "--methods", "plain"])
    assert "4 cells, 2 already finished, 2 to run" in capsys.readouterr().out
    rows2 = _records(tmp_path / "results.jsonl")
    assert rows2[:6] == rows and [(r["method"], r["seed"]) for r in rows2[6:]] == [("plain", 2), ("plain", 2)]


def test_embeddings_cli_prints_probe_accuracy_against_chance(tiny_checkpoint, tiny_data, tmp_path, capsys):
    rows = embeddings.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--epochs", "1", *TINY,
                            "--fractions", "0.5", "--seeds", "3", "--per_class", "20", "--out_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert len(rows) == 1 and rows[0]["chance"] == 0.2 and rows[0]["seed"] == 3
    assert 0.0 <= rows[0]["probe_generated"] <= 1.0 and 0.0 <= rows[0]["probe_real_dev"] <= 1.0
    assert "generated" in out and "chance 0.200" in out
    assert (tmp_path / "embeddings-sst-l0.5-s3.png").stat().st_size > 1000
    assert _rows(tmp_path / "probe.csv")[0]["probe_generated"] == str(rows[0]["probe_generated"])
    again = embeddings.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--out_dir", str(tmp_path / "b"),
                             "--checkpoint", str(tmp_path / "cells" / "sst-l0.5-s3" / "best.safetensors"), "--per_class", "20"])
    assert again[0]["probe_generated"] == rows[0]["probe_generated"]  # same model, same seed: same fakes


def test_frozen_study_holds_the_steps_fixed_and_logs_the_fakes(tiny_checkpoint, tiny_data, tmp_path, capsys):
    argv = ["--frozen", "--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--noise_dim", "8",
            "--fractions", "0.25", "--unlabeled", "0", "1", "--seeds", "1", "2", "--steps", "6", "--eval_every", "3",
            "--labeled_per_batch", "4", "--unlabeled_per_batch", "4", "--embeddings", str(tmp_path / "emb.pt"),
            "--out_dir", str(tmp_path / "study")]
    summary = study.main(argv)
    rows = _records(tmp_path / "study" / "results.jsonl")
    assert len(rows) == 2 * (1 + 2 * 2)  # per seed: plain once, two GANs at two unlabelled amounts
    assert {r["steps"] for r in rows} == {6} and {r["unlabeled"] for r in rows if r["method"] == "plain"} == {0}
    ac = [r for r in rows if r["method"] == "acganbert"]
    assert all(0 <= r["probe_acc"] <= 1 and r["chance"] == 0.2 and "class_coverage" in r for r in ac)
    assert all(r.get("probe_acc") is None and "coverage" in r for r in rows if r["method"] == "ganbert")
    gan = [s for s in summary if s["method"] != "plain"]
    assert len(gan) == 4 and all(s["seeds"] == 2 and s["diff_lo"] <= s["diff_mean"] <= s["diff_hi"] for s in gan)
    assert (tmp_path / "study" / "study-sst-frozen.png").stat().st_size > 1000 and (tmp_path / "emb.pt").is_file()
    records = (tmp_path / "study" / "cells" / "sst-acganbert-l0.25-u1-s1" / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 3 and "probe_acc" in records[0]
    assert "| acganbert | 0.25 | 1 | 2 |" in capsys.readouterr().out

    study.main(argv[:-2] + ["--out_dir", str(tmp_path / "study"), "--resume", "--seeds", "1", "2", "3"])
    assert "15 cells, 10 already finished, 5 to run" in capsys.readouterr().out
    assert _records(tmp_path / "study" / "results.jsonl")[:10] == rows


@pytest.mark.parametrize("argv,message", [(["--labeled_fraction", "0"], "--labeled_fraction"),
                                          (["--method", "wgan"], "method"),
                                          (["--replicate", "two"], "--replicate"),
                                          (["--pcgrad"], "unrecognized arguments: --pcgrad")])
def test_bad_flag_values_are_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(argv)
    assert message in capsys.readouterr().err


def test_a_header_only_training_file_stops_the_gan_cli_with_the_message_alone(tiny_checkpoint, tiny_data, tmp_path,
                                                                               capsys):
    empty = tmp_path / "ids-sst-train.csv"
    empty.write_text("\tid\tsentence\tsentiment\n")
    with pytest.raises(SystemExit) as stop:  # before: a traceback from the replication factor
        train.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--sst_train", str(empty),
                    "--out_dir", str(tmp_path / "out"), "--epochs", "1", *TINY])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {empty}: no usable rows" in err and "nothing to train sst on" in err and "Traceback" not in err
