"""End to end: the CLIs on a tiny random BERT and 32 synthetic examples per file."""
import csv
import json

import pytest
import torch

from minibert import BertModel
from tasks import classifier, multitask
from tasks.engine.checkpointing import load_state

HEADERS = {"sst": "Predicted_Sentiment", "cfimdb": "Predicted_Sentiment", "para": "Predicted_Is_Paraphrase",
           "sts": "Predicted_Similarity"}
FILES = {"sst": "ids-sst", "cfimdb": "ids-cfimdb", "para": "quora", "sts": "sts"}


def _ids(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [row["id"] for row in csv.DictReader(f, delimiter="\t")]


def _check_predictions(pred_dir, data_dir, task, prefix=""):
    for split, data_split in (("dev", "dev"), ("test", "test-student")):
        path = pred_dir / f"{prefix}{task}-{split}-output.csv"
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["id", HEADERS[task]]
        assert [r[0] for r in rows[1:]] == _ids(data_dir / f"{FILES[task]}-{data_split}.csv")
        values = [float(r[1]) for r in rows[1:]]
        if task == "para":
            assert set(values) <= {0.0, 1.0}
        elif task == "sts":
            assert all(0.0 <= v <= 5.0 for v in values)
        else:
            assert set(values) <= set(range(5 if task == "sst" else 2))


@pytest.mark.parametrize("heads", [[], ["--para_head", "siamese", "--sts_head", "cross", "--pcgrad"]],
                         ids=["default-heads", "other-heads-pcgrad"])
def test_multitask_cli_writes_all_six_prediction_files(tiny_checkpoint, tiny_data, tmp_path, heads):
    scores = multitask.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--epochs", "2",
                             "--batch_size", "8", "--lr", "1e-3", "--out_dir", str(tmp_path / "run"),
                             "--predictions_dir", str(tmp_path / "pred"), *heads])
    for task in ("sst", "para", "sts"):
        _check_predictions(tmp_path / "pred", tiny_data, task)
    assert set(scores) == {"sst", "para", "sts", "overall"}
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("epoch") for r in records[:2]] == [1, 2] and records[-1]["final"] is True
    assert records[-1]["dev"]["overall"] == pytest.approx(scores["overall"])


def test_classifier_cli_pretrain_and_finetune(tiny_checkpoint, tiny_data, tmp_path):
    start = BertModel.from_pretrained(tiny_checkpoint).state_dict()
    for option in ("pretrain", "finetune"):
        scores = classifier.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--epochs", "1",
                                  "--batch_size", "8", "--option", option, "--out_dir", str(tmp_path / "run"),
                                  "--predictions_dir", str(tmp_path / option)])
        assert set(scores) == {"sst", "cfimdb"}
        for task in ("sst", "cfimdb"):
            _check_predictions(tmp_path / option, tiny_data, task, prefix=f"{option}-")
            # pretrain: the encoder's weights do not move, only the head's; finetune moves the encoder
            trained = load_state(tmp_path / "run" / f"{task}-{option}" / "best.safetensors")["model"]
            encoder = {k: v for k, v in trained.items() if k.startswith("bert.")}
            assert encoder.keys() == {f"bert.{k}" for k in start} and encoder
            unchanged = all(torch.equal(encoder[f"bert.{k}"], v) for k, v in start.items())
            assert unchanged == (option == "pretrain"), (task, option)
            assert not torch.equal(trained["heads.sentiment.weight"], torch.zeros_like(trained["heads.sentiment.weight"]))


def test_subset_of_tasks_and_max_examples(tiny_checkpoint, tiny_data, tmp_path):
    scores = multitask.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--epochs", "1",
                             "--tasks", "sts", "--max_examples", "10", "--out_dir", str(tmp_path / "run"),
                             "--predictions_dir", str(tmp_path / "pred")])
    assert set(scores) == {"sts", "overall"}
    rows = (tmp_path / "pred" / "sts-dev-output.csv").read_text().splitlines()
    assert len(rows) == 11


def test_bad_flag_value_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        multitask.main(["--para_head", "bilinear"])
    assert "invalid choice: 'bilinear'" in capsys.readouterr().err


def test_plot_metrics_writes_a_png(tmp_path):
    from tasks import plot_metrics
    path = tmp_path / "metrics.jsonl"
    records = [{"epoch": e, "train_loss": {"sst": 1.0 / e}, "dev": {"sst": 0.3 + 0.1 * e, "score": 0.3 + 0.1 * e}}
               for e in (1, 2)]
    path.write_text("\n".join(json.dumps(r) for r in records + [{"final": True}]) + "\n")
    assert len(plot_metrics.read_epochs(path)) == 2
    out = plot_metrics.main([str(path)])
    assert out.endswith("metrics.png") and (tmp_path / "metrics.png").stat().st_size > 1000


def test_plot_metrics_adds_a_panel_for_pcgrads_conflicts(tmp_path, monkeypatch):
    from tasks import plot_metrics
    import matplotlib.figure
    panels = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: panels.append(
        [ax.get_title() for ax in fig.axes]))
    logged = {"pcgrad": {"steps_by_tasks": {"2": 3}, "pairs": {"para/sst": {"steps": 3, "conflicting": 0.5}}}}
    records = [{"epoch": 1, "step": 3, "train_loss": {"sst": 1.0}, "dev": {"sst": 0.3, "score": 0.3}}]
    plot_metrics.plot(records, tmp_path / "plain.png")
    plot_metrics.plot([{**records[0], **logged}], tmp_path / "pcgrad.png")
    assert len(panels[0]) == 2 and len(panels[1]) == 3 and panels[1][2].startswith("PCGrad")


def test_plot_metrics_takes_steps_and_skips_nested_blocks(tmp_path):
    """With --eval_every a run has several records an epoch (x: their steps); a GAN's dev holds a "fakes" dict."""
    from tasks import plot_metrics
    path = tmp_path / "metrics.jsonl"
    records = [{"epoch": 1, "step": s, "train_loss": {"d": 1.0 / s}, "dev": {"sst": 0.3, "score": 0.3, "fakes": {"probe_acc": 0.5}}}
               for s in (10, 20, 30)]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    out = plot_metrics.main([str(path)])
    assert (tmp_path / "metrics.png").stat().st_size > 1000 and out.endswith("metrics.png")

