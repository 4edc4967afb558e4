"""tasks/average.py (a weight average of saved models) and tasks/ensemble.py (the mean of their predictions),
on tiny random models saved in the model-folder format."""
import csv

import pytest
import torch

from minibert import BertModel, Tokenizer
from tasks import average, ensemble
from tasks.launch.inference import build_processor
from tasks.domain.model import MultitaskBert
from tasks.launch.run import task_files

HEADERS = {"sst": "Predicted_Sentiment", "para": "Predicted_Is_Paraphrase", "sts": "Predicted_Similarity"}


def _saved(checkpoint, folder, seed, **heads):
    """A tiny MultitaskBert with every weight moved by a seed-dependent amount, saved as a model folder."""
    torch.manual_seed(seed)
    model = MultitaskBert(BertModel.from_pretrained(checkpoint, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                          tokenizer=Tokenizer.from_pretrained(checkpoint), **heads)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.save_pretrained(folder)


@pytest.fixture(scope="module")
def members(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    return [_saved(tiny_checkpoint, root / "m1", 1), _saved(tiny_checkpoint, root / "m2", 2),
            _saved(tiny_checkpoint, root / "m3", 3, para_head="siamese", symmetric_pairs=True)]


def test_averaged_weights_are_the_mean_of_the_members(members, tmp_path):
    folder = average.main(["--models", str(members[0]), str(members[1]), "--out", str(tmp_path / "soup")])
    states = [MultitaskBert.from_pretrained(f).state_dict() for f in (members[0], members[1], folder)]
    for key, value in states[2].items():
        assert torch.allclose(value, (states[0][key] + states[1][key]) / 2, rtol=0, atol=1e-6), key
    weighted = average.average_state_dicts(states[:2], weights=[3, 1])
    for key, value in weighted.items():
        assert torch.allclose(value, 0.75 * states[0][key] + 0.25 * states[1][key], rtol=0, atol=1e-6), key
    assert "average of 2 models" in (folder / "README.md").read_text()


def test_average_takes_a_member_saved_before_heads_safetensors(members, tmp_path):
    """A folder with its heads inside model.safetensors (the layout before heads.safetensors) averages with a
    new one, and the soup is written in the new layout."""
    import shutil
    from safetensors.torch import load_file, save_file

    old = shutil.copytree(members[0], tmp_path / "old")
    save_file({**load_file(str(old / "model.safetensors")), **load_file(str(old / "heads.safetensors"))},
              str(old / "model.safetensors"))
    (old / "heads.safetensors").unlink()
    folder = average.main(["--models", str(old), str(members[1]), "--out", str(tmp_path / "soup")])
    assert (folder / "heads.safetensors").is_file() and "heads.sentiment.weight" not in load_file(str(folder / "model.safetensors"))
    states = [MultitaskBert.from_pretrained(f).state_dict() for f in (members[0], members[1], folder)]
    for key, value in states[2].items():
        assert torch.allclose(value, (states[0][key] + states[1][key]) / 2, rtol=0, atol=1e-6), key


def test_average_refuses_models_of_other_architectures(members, tmp_path):
    with pytest.raises(SystemExit, match="differs"):  # m3 has a Siamese paraphrase head
        average.main(["--models", str(members[0]), str(members[2]), "--out", str(tmp_path / "soup")])
    a = {"w": torch.zeros(2), "n": torch.tensor([1, 2])}
    with pytest.raises(ValueError, match="non-float"):
        average.average_state_dicts([a, {"w": torch.ones(2), "n": torch.tensor([1, 3])}])
    with pytest.raises(ValueError, match="architecture"):
        average.average_state_dicts([a, {"w": torch.ones(3), "n": torch.tensor([1, 2])}])


def _column(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], [float(r[1]) for r in rows[1:]]


def test_ensemble_predicts_the_mean_of_the_members(members, tiny_data, tmp_path, capsys):
    argv = ["--models", *map(str, members), "--data_dir", str(tiny_data), "--predictions_dir", str(tmp_path)]
    result = ensemble.main(argv)
    args = ensemble.parse_args(argv)
    assert set(result["rows"]) == {"model 1", "model 2", "model 3", "ensemble"}
    assert "ensemble" in capsys.readouterr().out
    for name in ("sst", "para", "sts"):
        files = task_files(args, name, name)
        probs, preds = [], []
        for folder in members:  # each member alone, through the ordinary prediction path
            model = MultitaskBert.from_pretrained(folder)
            proc = build_processor(name, model, model.tokenizer, files)
            probs.append(proc.probabilities(model, "dev"))
            preds.append(proc.predict(model, "dev"))
        mean = torch.stack(probs).mean(0)
        header, written = _column(files["dev_out"])
        assert header == ["id", HEADERS[name]]
        if name == "sst":
            assert written == mean.argmax(-1).tolist()
            assert torch.allclose(probs[0].sum(-1), torch.ones(len(written)), atol=1e-5)
        elif name == "para":
            assert written == (mean > 0.5).long().tolist()
            assert (probs[0] > 0.5).long().tolist() == preds[0]  # σ(z) > 0.5 is the member's own z > 0
        else:
            assert written == pytest.approx(torch.tensor(preds).mean(0).tolist(), abs=6e-5)  # the file keeps 4 decimals
        assert _column(files["test_out"])[1]  # the test file is written too
