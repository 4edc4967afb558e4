"""tasks/launch/run.py, the run the CLIs share, with every lever on at once: it trains and predicts (multitask), and
the classifier runs a phase with R-Drop and layer-wise decay."""
import pytest

from tasks import classifier, multitask
from tasks.domain.model import MultitaskBert


def test_every_lever_on_at_once_trains_and_predicts(tiny_checkpoint, tiny_data, tmp_path, capsys):
    scores = multitask.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--epochs", "1",
                             "--batch_size", "8", "--max_examples", "16", "--out_dir", str(tmp_path / "run"),
                             "--predictions_dir", str(tmp_path / "pred"), "--para_mnrl_weight", "0.5",
                             "--para_augment", "symmetric+transitive", "--rdrop_alpha", "1", "--head_dropout_samples",
                             "2", "--layer_lr_decay", "0.8", "--reinit_layers", "1", "--sts_cosine_map", "affine"])
    assert set(scores) == {"sst", "para", "sts", "overall"}
    assert "--para_augment symmetric+transitive adds" in capsys.readouterr().out
    assert MultitaskBert.from_pretrained(tmp_path / "run" / "model").head_config()["sts_cosine_map"] == "affine"


@pytest.mark.filterwarnings("ignore:checkpoint .* has no MLM head")
def test_classifier_with_a_phase_rdrop_and_layer_decay(tiny_checkpoint, tiny_data, tmp_path):
    """A DAE phase (which ignores --layer_lr_decay), then fine-tuning with R-Drop, the decay and a re-drawn layer."""
    scores = classifier.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--tasks", "sst",
                              "--epochs", "1", "--batch_size", "8", "--max_examples", "16", "--out_dir", str(tmp_path),
                              "--predictions_dir", str(tmp_path / "pred"), "--phases", "dae,finetune",
                              "--rdrop_alpha", "1", "--layer_lr_decay", "0.9", "--reinit_layers", "1"])
    assert 0 <= scores["sst"] <= 1


def test_model_and_data_flags_are_their_configs_fields_in_every_training_command():
    """tasks/launch/configs.py: each field of ModelConfig and DataConfig is one flag of the training commands, and the
    config built from the parsed defaults is the dataclass's default config."""
    import dataclasses

    from gan import train as gan_train
    from tasks import classifier, multitask
    from tasks.launch.configs import DataConfig, ModelConfig
    from tasks.engine import dataclass_from_args
    for parse_args in (multitask.parse_args, classifier.parse_args, gan_train.parse_args):
        args = parse_args([])
        for cls in (ModelConfig, DataConfig):
            assert {f.name for f in dataclasses.fields(cls)} <= set(vars(args)), cls
            # (the GAN's predictions go to predictions/gan by default)
            assert dataclass_from_args(cls, args) == dataclasses.replace(cls(), **{
                k: v for k, v in vars(args).items() if k == "predictions_dir" and k in vars(cls())}), cls
    args = multitask.parse_args(["--pooling", "cls", "--max_examples", "7", "--no-predict_test"])
    assert dataclass_from_args(ModelConfig, args).pooling == "cls"
    data = dataclass_from_args(DataConfig, args)
    assert (data.max_examples, data.predict_test) == (7, False)
