"""Every technique flag end to end through the CLIs, on a tiny random BERT and 16 synthetic examples."""
import json
from collections import Counter

import pytest
import torch

from minibert import BertModel, Tokenizer
from tasks import classifier, multitask
from tasks.engine.checkpointing import load_state
from tasks.techniques.contrastive import balanced_sizes
from tasks.domain.data import load_sentiment, subsample


def _classify(tiny_checkpoint, tiny_data, out, *flags, model=None):
    return classifier.main(["--model", str(model or tiny_checkpoint), "--data_dir", str(tiny_data), "--tasks", "sst",
                            "--epochs", "1", "--batch_size", "8", "--max_examples", "16", "--out_dir", str(out),
                            "--predictions_dir", str(out / "pred"), *flags])


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _encoder_state(path):
    state = load_state(path)["model"]
    return {k: v for k, v in state.items() if k.startswith("bert.")}


FLAGS = {
    "dae": ["--phases", "dae,finetune"],
    "mlm": ["--phases", "dae,finetune", "--dae_objective", "mlm"],
    "contrastive": ["--phases", "contrastive,finetune"],
    "supcon": ["--phases", "contrastive,finetune", "--contrastive_loss", "supcon", "--no-imbalance_correction"],
    "3phase": ["--phases", "dae,contrastive,finetune", "--dae_decoder_layers", "2"],
    "adversarial": ["--adversarial"],
    "child_f": ["--child_tuning", "F"],
    "child_d": ["--child_tuning", "D", "--child_tuning_fisher_batches", "2"],
}


@pytest.mark.filterwarnings("ignore:checkpoint .* has no MLM head")
@pytest.mark.parametrize("name", list(FLAGS))
def test_each_flag_runs_end_to_end(tiny_checkpoint, tiny_data, tmp_path, name):
    scores = _classify(tiny_checkpoint, tiny_data, tmp_path, *FLAGS[name])
    run = tmp_path / "sst-finetune"
    final = _records(run / "metrics.jsonl")[-1]
    assert final["final"] and final["dev"]["sst"] == pytest.approx(scores["sst"]) and 0 <= scores["sst"] <= 1
    assert len((tmp_path / "pred" / "finetune-sst-dev-output.csv").read_text().splitlines()) == 17
    phases = [p for p in ("dae", "contrastive") if p in FLAGS[name][1]] if FLAGS[name][0] == "--phases" else []
    start = {"bert." + k: v for k, v in BertModel.from_pretrained(tiny_checkpoint).state_dict().items()}
    for phase in phases:  # each phase trained the encoder and recorded a dev loss
        assert final["before_finetuning"][f"{phase}_dev_loss"] > 0
        after = _encoder_state(run / f"phase-{phase}" / "best.safetensors")
        assert any(not torch.equal(after[k], start[k]) for k in after)
    best = load_state(run / "best.safetensors")
    assert any(k.startswith("heads.cat_sst.") for k in best["model"]) == (name == "adversarial")
    assert best["meta"]["flags"]["child_tuning"] == {"child_f": "F", "child_d": "D"}.get(name, "none")


def test_each_phase_alone_hands_its_encoder_to_the_next(tiny_checkpoint, tiny_data, tmp_path):
    dae = _classify(tiny_checkpoint, tiny_data, tmp_path / "a", "--phases", "dae")
    assert dae["sst"]["dae_dev_loss"] > 0
    first = tmp_path / "a" / "sst-finetune" / "encoder"
    assert Tokenizer.from_pretrained(first).vocab_size == Tokenizer.from_pretrained(tiny_checkpoint).vocab_size
    _classify(tiny_checkpoint, tiny_data, tmp_path / "b", "--phases", "contrastive", model=first)
    second = tmp_path / "b" / "sst-finetune" / "encoder"
    w0, w1, w2 = (BertModel.from_pretrained(p).layers[0].ffn.up.weight for p in (tiny_checkpoint, first, second))
    assert not torch.equal(w0, w1) and not torch.equal(w1, w2)
    scores = _classify(tiny_checkpoint, tiny_data, tmp_path / "c", model=second)
    assert 0 <= scores["sst"] <= 1


def test_phases_then_a_frozen_encoder_probe(tiny_checkpoint, tiny_data, tmp_path):
    """--option pretrain: the phases train the encoder, fine-tuning then trains the head only."""
    _classify(tiny_checkpoint, tiny_data, tmp_path, "--phases", "contrastive,finetune", "--option", "pretrain")
    run = tmp_path / "sst-pretrain"
    after_phase, final = _encoder_state(run / "phase-contrastive" / "best.safetensors"), _encoder_state(run / "best.safetensors")
    assert all(torch.equal(final[k], after_phase[k]) for k in final)


def test_the_papers_third_phase_a_reference_head_on_a_frozen_encoder_is_kept_and_reloaded(tiny_checkpoint, tiny_data,
                                                                                         tmp_path):
    """--finetune_encoder frozen: after the contrastive phase the encoder stays as the phase left it, the reference's
    head trains, and the saved model folder rebuilds that head (and predicts as the run did)."""
    from tasks.domain.model import MultitaskBert
    _classify(tiny_checkpoint, tiny_data, tmp_path, "--phases", "contrastive,finetune", "--finetune_encoder", "frozen")
    run = tmp_path / "sst-finetune"
    after_phase, final = _encoder_state(run / "phase-contrastive" / "best.safetensors"), _encoder_state(run / "best.safetensors")
    assert all(torch.equal(final[k], after_phase[k]) for k in final)
    model = MultitaskBert.from_pretrained(run / "model")
    assert model.head_config()["sentiment_head"] == "reference" and isinstance(model.heads["sentiment"], torch.nn.Sequential)
    trained = load_state(run / "best.safetensors")["model"]
    assert torch.equal(model.heads["sentiment"][3].weight, trained["heads.sentiment.3.weight"])


@pytest.mark.filterwarnings("ignore:.*no checkpoint at")
def test_resume_skips_finished_phases(tiny_checkpoint, tiny_data, tmp_path):
    flags = ["--phases", "dae,contrastive,finetune", "--dae_epochs", "2", "--resume"]
    first = _classify(tiny_checkpoint, tiny_data, tmp_path, *flags)
    again = _classify(tiny_checkpoint, tiny_data, tmp_path, *flags)
    assert again == first
    for phase, epochs in (("dae", 2), ("contrastive", 1)):  # one record per epoch: nothing ran twice
        assert len(_records(tmp_path / "sst-finetune" / f"phase-{phase}" / "metrics.jsonl")) == epochs


def test_multitask_adversarial_with_siamese_heads(tiny_checkpoint, tiny_data, tmp_path):
    scores = multitask.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--epochs", "1",
                             "--batch_size", "8", "--max_examples", "16", "--tasks", "para", "sts", "--para_head",
                             "siamese", "--adversarial", "--out_dir", str(tmp_path / "run"),
                             "--predictions_dir", str(tmp_path / "pred")])
    assert set(scores) == {"para", "sts", "overall"}


def test_multitask_phases_use_every_tasks_sentences_and_the_labelled_ones(tiny_checkpoint, tiny_data, tmp_path, capsys):
    scores = multitask.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--epochs", "1",
                             "--batch_size", "8", "--max_examples", "16", "--tasks", "sst", "para",
                             "--phases", "dae,contrastive,finetune", "--out_dir", str(tmp_path / "run"),
                             "--predictions_dir", str(tmp_path / "pred")])
    assert set(scores) == {"sst", "para", "overall"}
    out = capsys.readouterr().out
    assert "phase dae: 48 training examples" in out  # 16 SST sentences + 16 Quora pairs
    # SST only: the 16 sampled rows' classes, resized by eq. 4-5 (checked against hand-computed sizes elsewhere)
    counts = Counter(e.label for e in subsample(load_sentiment(tiny_data / "ids-sst-train.csv"), 16))
    assert len(counts) > 1 and max(counts.values()) > min(counts.values())  # imbalanced: copies are made
    expected = sum(balanced_sizes(dict(counts)).values())
    assert expected > 16 and f"phase contrastive: {expected} training examples" in out
    with pytest.raises(ValueError, match="sentence-classification"):
        multitask.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--tasks", "sts",
                        "--max_examples", "8", "--phases", "contrastive,finetune", "--out_dir", str(tmp_path / "x")])


@pytest.mark.parametrize("value, message", [("contrastive,dae", "in the order"), ("dae,pretrain", "subset")])
def test_bad_phases_are_a_clear_error(capsys, value, message):
    with pytest.raises(SystemExit):
        classifier.parse_args(["--phases", value])
    assert message in capsys.readouterr().err


def test_under_select_on_heldout_each_phase_picks_its_epoch_on_the_held_out_rows_never_dev(
        tiny_checkpoint, tiny_data, tmp_path, monkeypatch):
    from tasks.techniques import phases
    seen, dae, contrastive = {}, phases.DenoisingProcessor, phases.ContrastiveProcessor

    def spy(name, cls, dev_at):
        def build(*a, **k):
            seen[name] = (list(a[0]), list(a[dev_at]))
            return cls(*a, **k)
        return build
    monkeypatch.setattr(phases, "DenoisingProcessor", spy("dae", dae, 8))
    monkeypatch.setattr(phases, "ContrastiveProcessor", spy("contrastive", contrastive, 11))
    _classify(tiny_checkpoint, tiny_data, tmp_path, "--phases", "dae,contrastive,finetune", "--select_on", "heldout",
              "--heldout_fraction", "0.25")
    rows = subsample(load_sentiment(tiny_data / "ids-sst-train.csv"), 16)
    dev_sentences = {e.sentence for e in load_sentiment(tiny_data / "ids-sst-dev.csv")}
    held = [e for e in rows if e.sentence not in set(seen["dae"][0])]
    assert len(held) == 4  # a quarter of the 16 rows: not trained on by either phase
    assert seen["dae"][1] == [e.sentence for e in held] and not set(seen["dae"][1]) & dev_sentences
    assert seen["contrastive"][1] == [(e.sentence, e.label) for e in held]
    assert not {s for s, _ in seen["contrastive"][0]} & set(seen["dae"][1])
