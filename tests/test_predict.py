"""tasks/predict.py writes beside the model, and replaces no file outside that folder without --overwrite (before:
it wrote to ./predictions by default, silently replacing the training run's files)."""
import pytest

from minibert import BertModel, Tokenizer
from tasks import predict
from tasks.domain.model import MultitaskBert
from tasks.domain.saved_model import save_model_folder


@pytest.fixture(scope="module")
def run_folder(tiny_checkpoint, tmp_path_factory):
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    model = MultitaskBert(BertModel.from_pretrained(tiny_checkpoint), ["sst"], tokenizer=tok)
    run = tmp_path_factory.mktemp("runs") / "multitask"
    save_model_folder(model, tok, run / "model")
    return run


def test_predictions_go_beside_the_model_and_others_files_are_kept(run_folder, tiny_data, tmp_path, capsys):
    argv = ["--model", str(run_folder / "model"), "--data_dir", str(tiny_data)]
    assert predict.parse_args(argv).predictions_dir == str((run_folder / "predictions").resolve())
    with pytest.raises(SystemExit):
        predict.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "(default: beside the model, <the model folder's parent>/predictions: runs/multitask/predictions" in shown
    predict.main(argv)
    ours = run_folder / "predictions" / "sst-dev-output.csv"
    first = ours.read_text()
    assert len(first.splitlines()) == 33 and (run_folder / "predictions" / "sst-test-output.csv").is_file()
    ours.write_text("stale")
    predict.main(argv)  # its own folder: written again without asking
    assert ours.read_text() == first

    training = tmp_path / "predictions"  # e.g. the files a training run wrote to predictions/
    training.mkdir()
    (training / "sst-dev-output.csv").write_text("the training run's")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        predict.main(argv + ["--predictions_dir", str(training)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    assert f"{training / 'sst-dev-output.csv'} already exists, outside this model's own predictions folder" in err
    assert "--overwrite" in err and (training / "sst-dev-output.csv").read_text() == "the training run's"
    assert not (training / "sst-test-output.csv").exists()  # refused before writing any file
    predict.main(argv + ["--predictions_dir", str(training), "--overwrite"])
    assert (training / "sst-dev-output.csv").read_text() == first
