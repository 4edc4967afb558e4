"""The fast paths are invisible: the unpadded mask left out, torch's GELU kernel, the CPU dropout path, hidden
states kept only when asked for; --compile and the CLI flags; smoke tests of benchmarks/bench_bert.py and its
memory tracker."""
import sys
from pathlib import Path

import pytest
import torch

from conftest import hf_bert_config
from minibert import BertConfig, BertModel, tiny_config
from minibert import model as model_module
from minibert.checkpoint import hf_to_minibert
from minibert.functional import gelu, gelu_tanh

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
transformers = pytest.importorskip("transformers")


def test_an_unpadded_batch_reaches_sdpa_without_a_mask(monkeypatch):
    model = BertModel(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).eval()
    ids = torch.randint(5, 99, (3, 7))
    seen = []
    real = model_module.fast_attention

    def spy(q, k, v, mask=None, *args, **kw):
        seen.append(mask)
        return real(q, k, v, mask, *args, **kw)

    monkeypatch.setattr(model_module, "fast_attention", spy)
    with torch.no_grad():
        full = model(ids, torch.ones_like(ids)).last_hidden_state
        none = model(ids, None).last_hidden_state
        padded_mask = torch.ones_like(ids)
        padded_mask[0, 5:] = 0
        model(ids, padded_mask)
    assert seen[:4] == [None] * 4 and seen[4] is not None and seen[4].shape == (3, 1, 1, 7)
    assert torch.equal(full, none)


def test_cpu_training_with_attention_dropout_takes_the_written_out_path(monkeypatch):
    # SDPA has no CPU kernel with dropout (it falls back to the same ops with torch's slower mask), so CPU training
    # uses functional.attention and its dropout; evaluation and dropout-free training keep SDPA
    calls = {"sdpa": 0, "manual": 0}

    def counting(name, real):
        def wrapped(*args, **kw):
            calls[name] += 1
            return real(*args, **kw)
        return wrapped

    monkeypatch.setattr(model_module, "fast_attention", counting("sdpa", model_module.fast_attention))
    monkeypatch.setattr(model_module, "attention", counting("manual", model_module.attention))
    ids = torch.randint(5, 99, (2, 6))
    model = BertModel(tiny_config(attention_probs_dropout_prob=0.1))  # 2 layers
    model.train()(ids)
    assert calls == {"sdpa": 0, "manual": 2}
    model.eval()(ids)
    assert calls == {"sdpa": 2, "manual": 2}
    BertModel(tiny_config(attention_probs_dropout_prob=0.0)).train()(ids)
    assert calls == {"sdpa": 4, "manual": 2}
    assert isinstance(model.layers[0].drop, torch.nn.Dropout)  # code that finds nn.Dropout modules still does


@pytest.mark.parametrize("name, formula", [("gelu", gelu), ("gelu_new", gelu_tanh)])
def test_activation_kernels_are_the_written_out_functions(name, formula):
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    assert torch.allclose(model_module.ACTIVATIONS[name](x), formula(x), atol=1e-12)


@pytest.mark.parametrize("name", sorted(model_module.ACTIVATIONS))
def test_inplace_activation_is_the_same_function(name):
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    assert torch.equal(model_module.INPLACE_ACTIVATIONS[name](x.clone()), model_module.ACTIVATIONS[name](x))


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new", "relu"])
def test_feed_forward_overwrites_its_pre_activation_only_without_autograd(hidden_act, monkeypatch):
    """Inference (no_grad, inference_mode, or frozen weights) takes the in-place activation and gives the same
    output; training takes the out-of-place one, whose backward needs the pre-activation."""
    torch.manual_seed(0)
    ffn = model_module.FeedForward(tiny_config(hidden_act=hidden_act))
    x = torch.randn(2, 5, ffn.up.in_features)
    reference = ffn.down(model_module.ACTIVATIONS[hidden_act](ffn.up(x))).detach()
    calls = []
    inplace = ffn.act_
    monkeypatch.setattr(ffn, "act_", lambda h: calls.append("inplace") or inplace(h))
    with torch.no_grad():
        assert torch.equal(ffn(x), reference)
    with torch.inference_mode():
        assert torch.equal(ffn(x), reference)
    assert calls == ["inplace", "inplace"]
    out = ffn(x)  # training: autograd must still see the pre-activation
    out.square().sum().backward()
    assert calls == ["inplace", "inplace"] and ffn.up.weight.grad is not None
    ffn.requires_grad_(False)  # a frozen encoder (--option pretrain) needs no backward through it
    assert torch.equal(ffn(x), reference) and calls == ["inplace"] * 3


# ---- benchmarks/bench_bert.py ----------------------------------------------------------------------------------

def test_live_tensor_bytes_counts_views_once_and_frees():
    from bench_bert import LiveTensorBytes
    with LiveTensorBytes() as tracker:
        a = torch.ones(1000, 250)  # 1,000,000 bytes
        view = a[10:]
        del a
        b = torch.ones(500, 250)  # +500,000 while `view` keeps a's storage alive
        del view, b
        c = torch.ones(100, 250)  # +100,000 after both were freed
    assert tracker.peak == 1_500_000 and tracker.current == 100_000
    del c


def test_inference_keeps_no_more_tensors_alive_than_transformers():
    """Hidden states are kept only when asked for: otherwise each layer's output is freed as the next runs."""
    from bench_bert import LiveTensorBytes, make_inputs
    cfg = hf_bert_config(vocab_size=99, hidden_size=64, num_hidden_layers=8, num_attention_heads=4, intermediate_size=64)
    theirs = transformers.BertModel(cfg).eval()
    ours = BertModel(BertConfig.from_dict(cfg.to_dict())).eval()
    ours.load_state_dict(hf_to_minibert(theirs.state_dict())[0])
    ids, mask, types = make_inputs(99, 8, 32, "none")
    peaks = []
    for run in (lambda: ours(ids, mask, types), lambda: theirs(input_ids=ids, attention_mask=mask, token_type_ids=types)):
        with torch.inference_mode(), LiveTensorBytes() as tracker:
            run()
        peaks.append(tracker.peak)
    assert peaks[0] <= peaks[1], peaks


def test_speed_mode_smoke(capsys):
    from bench_bert import main
    rows = main(["--models", "tiny", "--repeats", "1", "--warmup", "0", "--batch_sizes", "2", "--lengths", "8",
                 "--padding", "ragged"])
    assert [r["what"] for r in rows] == ["infer", "train", "train_own_optim"]
    assert all(r["ratio"] > 0 and r["ours_peak_mib"] > 0 and r["theirs_peak_mib"] > 0 for r in rows)
    assert all(r["ours_faults"] >= 0 and r["theirs_faults"] >= 0 for r in rows)  # counted (NaN only on Windows)
    out = capsys.readouterr().out
    assert "command: python" in out and "| tiny | cpu | fp32 | 2 | 8 | ragged | train |" in out
    assert "page faults / run" in out


def test_epoch_mode_smoke(tiny_checkpoint, tiny_data, capsys):
    from bench_bert import main
    results = main(["--mode", "epoch", "--data_dir", str(tiny_data), "--model", str(tiny_checkpoint),
                    "--batch_size", "4", "--max_examples", "16"])
    bucketed, random = results
    assert bucketed["sentences"] == random["sentences"] == 16 and bucketed["real tokens"] == random["real tokens"]
    assert bucketed["token slots"] <= random["token slots"]
    assert "| length-bucketed |" in capsys.readouterr().out


# ---- --compile -------------------------------------------------------------------------------------------------

def _one_step(model, compile_flag, tmp_path, monkeypatch=None):
    from tasks.domain.model import MultitaskBert
    from tasks.engine import TrainConfig, Trainer

    class Proc:
        def num_batches(self):
            return 1

        def batches(self, epoch):
            g = torch.Generator().manual_seed(0)
            return iter([{"input_ids": torch.randint(5, 99, (4, 9), generator=g), "attention_mask": torch.ones(4, 9),
                          "labels": torch.tensor([0, 1, 2, 3])}])

        def loss(self, model, batch):
            return torch.nn.functional.cross_entropy(model.sentiment_logits(batch), batch["labels"])

    multitask = MultitaskBert(model, ("sst",), dropout=0.0)
    config = TrainConfig(epochs=1, lr=1e-3, warmup_ratio=0.0, compile=compile_flag, out_dir=str(tmp_path))
    trainer = Trainer(multitask, {"sst": Proc()}, config, lambda m: {"score": 0.0}, show_progress=False)
    trainer.fit()
    return multitask


def test_compile_flag_compiles_the_layers_and_trains_the_same(tmp_path, monkeypatch):
    from tasks.engine import accelerator
    real = accelerator.compile_layers
    monkeypatch.setattr(accelerator, "compile_layers", lambda model: real(model, backend="eager"))  # fast: no codegen
    cfg = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    eager = _one_step(BertModel(cfg), False, tmp_path / "eager")
    torch.manual_seed(0)
    compiled = _one_step(BertModel(cfg), True, tmp_path / "compiled")
    assert all(hasattr(layer, "_compiled_call_impl") and layer._compiled_call_impl is not None
               for layer in compiled.bert.layers)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_compile_flag_falls_back_with_a_message_where_unavailable(tmp_path, monkeypatch, caplog):
    import logging
    from tasks.engine import devices
    monkeypatch.setattr(devices.shutil, "which", lambda name: None)  # no C++ compiler for inductor on the CPU
    with caplog.at_level(logging.WARNING, logger="tasks.engine.devices"):
        model = _one_step(BertModel(tiny_config()), True, tmp_path)
    assert "--compile: torch.compile is unavailable here" in caplog.text and "C++ compiler" in caplog.text
    assert all(getattr(layer, "_compiled_call_impl", None) is None for layer in model.bert.layers)


def test_cli_gradient_checkpointing_and_attention_flags_reach_the_encoder(tiny_checkpoint, tiny_data, tmp_path,
                                                                          monkeypatch):
    from tasks import multitask
    calls = []
    real = model_module.checkpoint
    monkeypatch.setattr(model_module, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    manual = []
    real_attention = model_module.attention
    monkeypatch.setattr(model_module, "attention", lambda *a, **k: manual.append(1) or real_attention(*a, **k))
    multitask.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--epochs", "1", "--tasks", "sst",
                    "--max_examples", "8", "--batch_size", "8", "--out_dir", str(tmp_path / "run"),
                    "--predictions_dir", str(tmp_path / "pred"), "--gradient_checkpointing",
                    "--attn_implementation", "manual", "--no-predict_test"])
    layers = tiny_config().num_hidden_layers
    assert len(calls) == layers  # one training batch: each layer recomputed in backward
    assert len(manual) >= 2 * layers  # training (forward + recompute) and evaluation took the written-out path
